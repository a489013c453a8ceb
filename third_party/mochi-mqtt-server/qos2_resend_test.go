// SPDX-License-Identifier: MIT

//go:build unix

package mqtt

import (
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
)

// A QoS 2 publish whose PUBREC was lost with the connection is sent again
// with DUP on the resumed session (MQTT 5 4.4): it is acknowledged with a
// successful PUBREC and not delivered a second time [MQTT-4.3.3-10]; a
// publish without DUP that reuses the identifier of an exchange awaiting
// its PUBREL is still refused with 0x91.
func TestQoS2ResendOnAResumedSessionIsAcknowledged(t *testing.T) {
	_, addr := startWithReceiveMaximum(t, 10)
	sub, sr := connectReceiveMax(t, addr, "sub", 10)
	subscribeV5(t, sub, 1, "x/y")
	if ack := readPacket(t, sr, 5); ack.FixedHeader.Type != packets.Suback {
		t.Fatalf("SUBACK: %+v", ack)
	}
	publish := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 2},
		PacketID: 7, TopicName: "x/y", Payload: []byte("once")}

	c, r := connectReceiveMax(t, addr, "phone", 10)
	writeV5(t, c, publish)
	if rec := readPacket(t, r, 5); rec.FixedHeader.Type != packets.Pubrec || rec.ReasonCode != 0 {
		t.Fatalf("got %+v, want PUBREC", rec)
	}
	_ = c.Close() // the PUBREL never left

	c, r, present := connectV5(t, addr, "phone")
	if !present {
		t.Fatal("session not resumed")
	}
	if rec := readPacket(t, r, 5); rec.FixedHeader.Type != packets.Pubrec || rec.PacketID != 7 {
		t.Fatalf("got %+v, want the session's PUBREC 7 again", rec)
	}
	resend := publish
	resend.FixedHeader.Dup = true
	writeV5(t, c, resend)
	if rec := readPacket(t, r, 5); rec.FixedHeader.Type != packets.Pubrec || rec.PacketID != 7 || rec.ReasonCode != 0 {
		t.Fatalf("got %+v (reason %#x), want a successful PUBREC 7", rec.FixedHeader, rec.ReasonCode)
	}
	other := publish
	other.Payload = []byte("another")
	writeV5(t, c, other)
	if rec := readPacket(t, r, 5); rec.FixedHeader.Type != packets.Pubrec || rec.ReasonCode != packets.ErrPacketIdentifierInUse.Code {
		t.Fatalf("got %+v (reason %#x), want PUBREC 0x91 for another publish with identifier 7", rec.FixedHeader, rec.ReasonCode)
	}
	writeV5(t, c, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel, Qos: 1}, PacketID: 7})
	if comp := readPacket(t, r, 5); comp.FixedHeader.Type != packets.Pubcomp || comp.ReasonCode != 0 {
		t.Fatalf("got %+v (reason %#x), want PUBCOMP", comp.FixedHeader, comp.ReasonCode)
	}

	// Delivered once: the subscriber's next message after it is the next
	// one published.
	writeV5(t, c, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: "x/y", Payload: []byte("next")})
	for _, want := range []string{"once", "next"} {
		got := readPacket(t, sr, 5)
		if got.FixedHeader.Type != packets.Publish || string(got.Payload) != want {
			t.Fatalf("subscriber got %+v, want %s", got, want)
		}
		if got.FixedHeader.Qos > 0 {
			writeV5(t, sub, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: got.PacketID})
		}
	}
}
