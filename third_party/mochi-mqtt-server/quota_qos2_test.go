// SPDX-License-Identifier: MIT

//go:build unix

package mqtt

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

// startWithReceiveMaximum serves an allow-all server whose Receive
// Maximum (the client's QoS 1 and 2 publishes it may have unfinished) is
// max, and returns it and its address.
func startWithReceiveMaximum(t *testing.T, max uint16) (*Server, string) {
	t.Helper()
	opts := &Options{InlineClient: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	opts.Capabilities = NewDefaultServerCapabilities()
	opts.Capabilities.ReceiveMaximum = max
	s := New(opts)
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
	return s, ln.Address()
}

// nothingWithin reports whether no packet arrives on c within d.
func nothingWithin(t *testing.T, c net.Conn, r interface{ Buffered() int }, d time.Duration) bool {
	t.Helper()
	if r.Buffered() > 0 {
		return false
	}
	_ = c.SetReadDeadline(time.Now().Add(d))
	defer func() { _ = c.SetReadDeadline(time.Now().Add(15 * time.Second)) }()
	one := make([]byte, 1)
	_, err := c.Read(one)
	if err == nil {
		t.Fatalf("a packet (first byte %#x) arrived", one[0])
	}
	return errors.Is(err, os.ErrDeadlineExceeded)
}

// The server's QoS 2 deliveries awaiting their PUBCOMP hold the server's
// send quota, not the client's receive quota: a client with two of them
// open may still publish (it was disconnected "Receive Maximum
// exceeded").
func TestServerQoS2DeliveriesDoNotTakeTheClientsReceiveQuota(t *testing.T) {
	s, addr := startWithReceiveMaximum(t, 2)
	c, r := connectReceiveMax(t, addr, "phone", 10)
	sub := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, ProtocolVersion: 5,
		PacketID: 1, Filters: packets.Subscriptions{{Filter: "a/b", Qos: 2}}}
	subscribeWith(t, c, sub)
	if ack := readPacket(t, r, 5); ack.FixedHeader.Type != packets.Suback {
		t.Fatalf("SUBACK: %+v", ack)
	}
	for _, body := range []string{"one", "two"} {
		if err := s.Publish("a/b", []byte(body), false, 2); err != nil {
			t.Fatal(err)
		}
		pub := readPacket(t, r, 5)
		if pub.FixedHeader.Type != packets.Publish || pub.FixedHeader.Qos != 2 {
			t.Fatalf("got %+v, want a QoS 2 delivery", pub)
		}
		writeV5(t, c, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrec}, PacketID: pub.PacketID})
		if rel := readPacket(t, r, 5); rel.FixedHeader.Type != packets.Pubrel || rel.PacketID != pub.PacketID {
			t.Fatalf("got %+v, want PUBREL %d", rel, pub.PacketID)
		}
		// No PUBCOMP: the exchange stays open.
	}
	writeV5(t, c, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1},
		PacketID: 100, TopicName: "x/y", Payload: []byte("mine")})
	if ack := readPacket(t, r, 5); ack.FixedHeader.Type != packets.Puback || ack.PacketID != 100 {
		t.Fatalf("got %+v (reason %#x), want the PUBACK of the client's publish", ack.FixedHeader, ack.ReasonCode)
	}
}

// A client's own QoS 2 exchange, once complete, gives back the receive
// quota it held and no send quota: with Receive Maximum 1 and one
// delivery unacknowledged, the server sends nothing more until that
// PUBACK (it sent the next one at once, over the client's maximum).
func TestClientQoS2ExchangeDoesNotInflateTheSendQuota(t *testing.T) {
	s, addr := startWithReceiveMaximum(t, 10)
	c, r := connectReceiveMax(t, addr, "phone", 1)
	subscribeV5(t, c, 1, "a/b")
	if ack := readPacket(t, r, 5); ack.FixedHeader.Type != packets.Suback {
		t.Fatalf("SUBACK: %+v", ack)
	}
	if err := s.Publish("a/b", []byte("A"), false, 1); err != nil {
		t.Fatal(err)
	}
	a := readPacket(t, r, 5)
	if a.FixedHeader.Type != packets.Publish || string(a.Payload) != "A" {
		t.Fatalf("got %+v, want A", a)
	}
	writeV5(t, c, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 2},
		PacketID: 7, TopicName: "x/y", Payload: []byte("mine")})
	if rec := readPacket(t, r, 5); rec.FixedHeader.Type != packets.Pubrec || rec.PacketID != 7 {
		t.Fatalf("got %+v, want PUBREC 7", rec)
	}
	writeV5(t, c, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel, Qos: 1}, PacketID: 7})
	if comp := readPacket(t, r, 5); comp.FixedHeader.Type != packets.Pubcomp || comp.PacketID != 7 {
		t.Fatalf("got %+v, want PUBCOMP 7", comp)
	}
	if err := s.Publish("a/b", []byte("B"), false, 1); err != nil {
		t.Fatal(err)
	}
	if !nothingWithin(t, c, r, 500*time.Millisecond) {
		t.Fatal("read failed")
	}
	writeV5(t, c, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: a.PacketID})
	if b := readPacket(t, r, 5); b.FixedHeader.Type != packets.Publish || string(b.Payload) != "B" {
		t.Fatalf("got %+v, want B once A is acknowledged", b)
	}
}

// Receive Maximum counts QoS 1 and 2 publishes only: a QoS 0 publish of
// a client whose QoS 2 exchanges fill it is taken, not answered with a
// disconnection.
func TestQoS0PublishWithTheReceiveQuotaFull(t *testing.T) {
	_, addr := startWithReceiveMaximum(t, 1)
	c, r := connectReceiveMax(t, addr, "phone", 10)
	writeV5(t, c, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 2},
		PacketID: 7, TopicName: "x/y", Payload: []byte("held")})
	if rec := readPacket(t, r, 5); rec.FixedHeader.Type != packets.Pubrec {
		t.Fatalf("got %+v, want PUBREC", rec)
	}
	// No PUBREL: the exchange holds the only receive quota.
	writeV5(t, c, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: "x/y", Payload: []byte("q0")})
	subscribeV5(t, c, 2, "c/d")
	if ack := readPacket(t, r, 5); ack.FixedHeader.Type != packets.Suback {
		t.Fatalf("got %+v (reason %#x), want the SUBACK: the connection lives", ack.FixedHeader, ack.ReasonCode)
	}
}

// subscribeWith sends the SUBSCRIBE sub.
func subscribeWith(t *testing.T, c net.Conn, sub packets.Packet) {
	t.Helper()
	var buf bytes.Buffer
	if err := sub.SubscribeEncode(&buf); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(buf.Bytes()); err != nil {
		t.Fatal(err)
	}
}
