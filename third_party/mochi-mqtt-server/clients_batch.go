// SPDX-License-Identifier: MIT
// SPDX-FileCopyrightText: 2023 mochi-mqtt, mochi-co

package mqtt

import (
	"bytes"

	"github.com/mochi-mqtt/server/v2/packets"
)

// WritePackets writes several packets to the client with one write to the
// connection, in order, as WritePacket writes one: a hook that answers
// many publishes at once (acknowledgements that become ready together)
// pays one system call instead of one per packet. Every packet is encoded
// before anything is written; if one cannot be encoded, none is written
// and the error is returned.
func (cl *Client) WritePackets(pks []packets.Packet) error {
	if len(pks) == 1 {
		return cl.WritePacket(pks[0])
	}
	if cl.Closed() {
		return ErrConnectionClosed
	}
	if cl.Net.Conn == nil || len(pks) == 0 {
		return nil
	}

	encoded := make([]packets.Packet, len(pks))
	ends := make([]int, len(pks))
	var all bytes.Buffer
	for i, pk := range pks {
		epk, buf, err := cl.encodePacket(pk)
		if err != nil {
			return err
		}
		all.Write(buf.Bytes())
		encoded[i], ends[i] = epk, all.Len()
	}

	b := all.Bytes() // writeBuffer drains all; b keeps the bytes for the hooks
	if _, err := cl.writeBuffer(&all); err != nil {
		return err
	}
	start := 0
	for i, pk := range encoded {
		cl.packetSent(pk, int64(ends[i]-start), b[start:ends[i]])
		start = ends[i]
	}
	return nil
}
