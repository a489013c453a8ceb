// SPDX-License-Identifier: MIT
// SPDX-FileCopyrightText: 2023 mochi-mqtt, mochi-co

package mqtt

import (
	"encoding/binary"

	"github.com/mochi-mqtt/server/v2/packets"
)

// fanout is what the deliveries of one publish share (publishToSubscribers,
// with Options.ClientDirectWrites): the last encoding of the packet, which
// serves every subscriber whose packet encodes the same
// (packets.Packet.SameEncoding), the packet ID aside. Most subscribers of a
// topic get the same bytes, so a publish to a room of a hundred is encoded
// once instead of a hundred times.
type fanout struct {
	pk   packets.Packet // the packet last encoded, as prepared for its client
	b    []byte         // its encoding; never written to once made
	idAt int            // where the packet ID is in b (QoS > 0)
}

// encode returns the encoding of pk, prepared for its client
// (Client.prepareEncode). The bytes of a QoS 0 packet are shared with
// other deliveries of the publish and must not be changed or kept.
func (f *fanout) encode(pk *packets.Packet) ([]byte, error) {
	if f.b != nil && pk.SameEncoding(&f.pk) {
		if pk.FixedHeader.Qos == 0 || pk.PacketID == f.pk.PacketID {
			return f.b, nil
		}
		b := make([]byte, len(f.b))
		copy(b, f.b)
		binary.BigEndian.PutUint16(b[f.idAt:], pk.PacketID)
		return b, nil
	}
	buf, err := encodePrepared(*pk)
	if err != nil {
		return nil, err
	}
	b := buf.Bytes()
	f.pk, f.b = *pk, b
	if pk.FixedHeader.Qos > 0 && pk.FixedHeader.Type == packets.Publish {
		// Fixed header (type byte and remaining length, a varint), then
		// the topic with its length, then the packet ID.
		n := 1
		for n < len(b) && b[n]&0x80 != 0 {
			n++
		}
		f.idAt = n + 1 + 2 + len(pk.TopicName)
	}
	return b, nil
}

// publishCopy is pk.Copy(false) for a QoS 0 delivery written at once: it
// shares the payload and the properties' slices with pk instead of
// copying them, as nothing keeps the packet after the write. A packet
// that is queued instead is copied then (publishToClient).
func publishCopy(pk *packets.Packet) packets.Packet {
	out := *pk
	out.FixedHeader.Dup = false // [MQTT-4.3.1-1] [MQTT-4.3.2-2]
	out.Mods = packets.Mods{MaxSize: pk.Mods.MaxSize}
	out.PacketID = 0
	out.Properties.TopicAlias, out.Properties.TopicAliasFlag = 0, false // [MQTT-3.3.2-7]
	out.Ignore = false
	return out
}
