// SPDX-License-Identifier: MIT

//go:build unix

package mqtt

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"testing"

	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

// subscribeV5 sends a SUBSCRIBE with packet identifier id.
func subscribeV5(t *testing.T, c net.Conn, id uint16, filter string) {
	t.Helper()
	sub := packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Subscribe, Qos: 1},
		ProtocolVersion: 5,
		PacketID:        id,
		Filters:         packets.Subscriptions{{Filter: filter, Qos: 1}},
	}
	var buf bytes.Buffer
	if err := sub.SubscribeEncode(&buf); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(buf.Bytes()); err != nil {
		t.Fatal(err)
	}
}

// A client's packet identifiers and the server's are separate spaces
// (MQTT 5 2.2.1): a reconnecting client that subscribes with the
// identifier of a queued message the server resends is granted, not
// refused as "packet identifier in use" (0x91).
func TestSubscribeWithTheIdentifierOfAResentMessage(t *testing.T) {
	s := New(&Options{InlineClient: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err := s.AddHook(new(allowAll), nil); err != nil {
		t.Fatal(err)
	}
	ln := listeners.NewTCP(listeners.Config{ID: "t", Address: "127.0.0.1:0"})
	if err := s.AddListener(ln); err != nil {
		t.Fatal(err)
	}
	if err := s.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })

	first, fr, _ := connectV5(t, ln.Address(), "phone")
	subscribeV5(t, first, 1, "a/b")
	if ack := readPacket(t, fr, 5); ack.FixedHeader.Type != packets.Suback {
		t.Fatalf("SUBACK: %+v", ack)
	}
	old, ok := s.Clients.Get("phone")
	if !ok {
		t.Fatal("no client phone")
	}
	_ = first.Close()
	waitUntil(t, "the first connection ended", old.Closed)
	if err := s.Publish("a/b", []byte("queued"), false, 1); err != nil {
		t.Fatal(err)
	}

	second, sr, present := connectV5(t, ln.Address(), "phone")
	if !present {
		t.Fatal("session not present")
	}
	pub := readPacket(t, sr, 5)
	if pub.FixedHeader.Type != packets.Publish || string(pub.Payload) != "queued" {
		t.Fatalf("got %+v, want the queued publish", pub)
	}
	// Not acknowledged yet: the server's identifier stays in use.
	subscribeV5(t, second, pub.PacketID, "c/d")
	ack := readPacket(t, sr, 5)
	if ack.FixedHeader.Type != packets.Suback || len(ack.ReasonCodes) != 1 || ack.ReasonCodes[0] != 1 {
		t.Fatalf("SUBACK for identifier %d: %+v, want QoS 1 granted", pub.PacketID, ack.ReasonCodes)
	}
}
