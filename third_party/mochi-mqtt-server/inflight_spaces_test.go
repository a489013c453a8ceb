// SPDX-License-Identifier: MIT

//go:build unix

package mqtt

import (
	"bufio"
	"bytes"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

// writeV5 encodes pk (MQTT 5) onto c.
func writeV5(t *testing.T, c net.Conn, pk packets.Packet) {
	t.Helper()
	pk.ProtocolVersion = 5
	var buf bytes.Buffer
	var err error
	switch pk.FixedHeader.Type {
	case packets.Publish:
		err = pk.PublishEncode(&buf)
	case packets.Puback:
		err = pk.PubackEncode(&buf)
	case packets.Pubrec:
		err = pk.PubrecEncode(&buf)
	case packets.Pubrel:
		err = pk.PubrelEncode(&buf)
	case packets.Pubcomp:
		err = pk.PubcompEncode(&buf)
	case packets.Connect:
		err = pk.ConnectEncode(&buf)
	default:
		t.Fatalf("writeV5: type %d", pk.FixedHeader.Type)
	}
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(buf.Bytes()); err != nil {
		t.Fatal(err)
	}
}

// connectReceiveMax connects client id with a persistent session and
// Receive Maximum max: the server may have that many QoS ≥ 1 deliveries
// unacknowledged.
func connectReceiveMax(t *testing.T, addr, id string, max uint16) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetReadDeadline(time.Now().Add(15 * time.Second))
	writeV5(t, c, packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Connect},
		Connect:     packets.ConnectParams{ProtocolName: []byte("MQTT"), Keepalive: 60, ClientIdentifier: id},
		Properties: packets.Properties{SessionExpiryInterval: 600, SessionExpiryIntervalFlag: true,
			ReceiveMaximum: max},
	})
	r := bufio.NewReader(c)
	if ack := readPacket(t, r, 5); ack.FixedHeader.Type != packets.Connack || ack.ReasonCode != 0 {
		t.Fatalf("CONNACK: %+v", ack)
	}
	return c, r
}

// The client's packet identifiers and the server's are separate spaces
// (MQTT 5 2.2.1): a client's QoS 1 publish that happens to carry the
// identifier of a delivery it has not acknowledged yet (phones send and
// receive on one connection) neither takes that delivery out of the
// session nor costs the server its send quota.
func TestClientPublishWithTheIdentifierOfAnUnacknowledgedDelivery(t *testing.T) {
	start := func(t *testing.T) (*Server, string) {
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
		return s, ln.Address()
	}
	// deliveredThenCollide subscribes, has the server deliver "first"
	// and publishes the client's own QoS 1 message with its identifier.
	deliveredThenCollide := func(t *testing.T, s *Server, c net.Conn, r *bufio.Reader) packets.Packet {
		t.Helper()
		subscribeV5(t, c, 1, "a/b")
		if ack := readPacket(t, r, 5); ack.FixedHeader.Type != packets.Suback {
			t.Fatalf("SUBACK: %+v", ack)
		}
		if err := s.Publish("a/b", []byte("first"), false, 1); err != nil {
			t.Fatal(err)
		}
		first := readPacket(t, r, 5)
		if first.FixedHeader.Type != packets.Publish || string(first.Payload) != "first" {
			t.Fatalf("got %+v, want the first delivery", first)
		}
		writeV5(t, c, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1},
			PacketID: first.PacketID, TopicName: "x/y", Payload: []byte("mine")})
		if ack := readPacket(t, r, 5); ack.FixedHeader.Type != packets.Puback || ack.PacketID != first.PacketID {
			t.Fatalf("PUBACK of the client's publish: %+v", ack)
		}
		return first
	}

	t.Run("the delivery acknowledged after it frees the send quota", func(t *testing.T) {
		s, addr := start(t)
		c, r := connectReceiveMax(t, addr, "phone", 1)
		first := deliveredThenCollide(t, s, c, r)
		writeV5(t, c, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: first.PacketID})
		if err := s.Publish("a/b", []byte("second"), false, 1); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if next := readPacket(t, r, 5); next.FixedHeader.Type != packets.Publish || string(next.Payload) != "second" {
			t.Fatalf("got %+v, want the second delivery", next)
		}
	})

	t.Run("the delivery not acknowledged is resent after a reconnection", func(t *testing.T) {
		s, addr := start(t)
		c, r := connectReceiveMax(t, addr, "phone", 10)
		deliveredThenCollide(t, s, c, r)
		old, ok := s.Clients.Get("phone")
		if !ok {
			t.Fatal("no client phone")
		}
		_ = c.Close()
		waitUntil(t, "the connection ended", old.Closed)
		c2, r2 := connectReceiveMax(t, addr, "phone", 10)
		_ = c2.SetReadDeadline(time.Now().Add(10 * time.Second))
		if again := readPacket(t, r2, 5); again.FixedHeader.Type != packets.Publish || string(again.Payload) != "first" || !again.FixedHeader.Dup {
			t.Fatalf("got %+v, want the first delivery again", again)
		}
	})
}
