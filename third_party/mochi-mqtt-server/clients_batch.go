// SPDX-License-Identifier: MIT
// SPDX-FileCopyrightText: 2023 mochi-mqtt, mochi-co

package mqtt

import (
	"bytes"
	"sync"

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

	// The prepared packets wait for packetSent in a pooled slice (a
	// packet is a large struct: a fresh slice per batch of PUBACKs was a
	// tenth of a durable publish's allocated bytes), and each packet is
	// encoded straight into the one buffer written.
	ep := encodedBatches.Get().(*encodedBatch)
	defer ep.release()
	encoded, ends := ep.pks[:0], ep.ends[:0]
	var all bytes.Buffer
	for _, pk := range pks {
		epk := cl.prepareEncode(pk)
		if err := encodePreparedTo(&all, epk); err != nil {
			ep.pks, ep.ends = encoded, ends
			return err
		}
		encoded, ends = append(encoded, epk), append(ends, all.Len())
	}
	ep.pks, ep.ends = encoded, ends

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

// encodedBatch is WritePackets' scratch space, pooled.
type encodedBatch struct {
	pks  []packets.Packet
	ends []int
}

var encodedBatches = sync.Pool{New: func() any { return new(encodedBatch) }}

// maxPooledBatch bounds what goes back to the pool: a rare huge batch is
// left to the garbage collector instead of being kept.
const maxPooledBatch = 256

func (b *encodedBatch) release() {
	if cap(b.pks) > maxPooledBatch {
		return
	}
	clear(b.pks) // no payloads or properties kept alive by the pool
	b.pks, b.ends = b.pks[:0], b.ends[:0]
	encodedBatches.Put(b)
}
