// SPDX-License-Identifier: MIT

//go:build unix

package mqtt

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

// connectAliases connects client id with a persistent session, Topic
// Alias Maximum aliases and Receive Maximum recvMax (0: unset).
func connectAliases(t *testing.T, addr, id string, aliases, recvMax uint16) (net.Conn, *bufio.Reader, bool) {
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
			TopicAliasMaximum: aliases, ReceiveMaximum: recvMax},
	})
	r := bufio.NewReader(c)
	ack := readPacket(t, r, 5)
	if ack.FixedHeader.Type != packets.Connack || ack.ReasonCode != 0 {
		t.Fatalf("CONNACK: %+v", ack)
	}
	return c, r, ack.SessionPresent
}

func startAliasServer(t *testing.T, direct bool, opts ...func(*Options)) (*Server, string) {
	t.Helper()
	o := &Options{InlineClient: true, ClientDirectWrites: direct,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	for _, f := range opts {
		f(o)
	}
	s := New(o)
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

// Topic Alias mappings last only for their network connection
// [MQTT-3.3.2-7]: an unacknowledged QoS 1 delivery that the first
// connection got by alias only (its topic named by an earlier delivery)
// is resent to the next connection with its topic name, and without an
// alias the new connection has not been told (nor one at all when the new
// connection allows none, [MQTT-3.3.2-9]). Before, it was resent as it
// was stored, with an empty topic name and the old connection's alias:
// a client cannot tell its topic (a protocol error, 0x82, for a strict
// one, which then disconnects; its session resends the same packet at
// every reconnection).
func TestResentDeliveryNamesItsTopic(t *testing.T) {
	for _, direct := range []bool{false, true} {
		for _, aliases := range []uint16{0, 10} {
			t.Run(fmt.Sprintf("direct=%v/aliases=%d", direct, aliases), func(t *testing.T) {
				s, addr := startAliasServer(t, direct)
				c, r, _ := connectAliases(t, addr, "phone", 10, 0)
				subscribeV5(t, c, 1, "a/b")
				if ack := readPacket(t, r, 5); ack.FixedHeader.Type != packets.Suback {
					t.Fatalf("SUBACK: %+v", ack)
				}
				if err := s.Publish("a/b", []byte("one"), false, 1); err != nil {
					t.Fatal(err)
				}
				first := readPacket(t, r, 5)
				if first.TopicName != "a/b" || first.Properties.TopicAlias == 0 {
					t.Fatalf("first delivery %q alias %d, want a/b with an alias", first.TopicName, first.Properties.TopicAlias)
				}
				writeV5(t, c, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: first.PacketID})
				cl, _ := s.Clients.Get("phone")
				waitUntil(t, "the alias recorded as sent", func() bool { return aliasSentFor(cl, "a/b") })
				if err := s.Publish("a/b", []byte("two"), false, 1); err != nil {
					t.Fatal(err)
				}
				second := readPacket(t, r, 5)
				if second.TopicName != "" || string(second.Payload) != "two" {
					t.Fatalf("second delivery %q %q, want it by alias only", second.TopicName, second.Payload)
				}
				_ = c.Close() // "two" is not acknowledged

				old, _ := s.Clients.Get("phone")
				waitUntil(t, "the first connection ended", old.Closed)
				c, r, present := connectAliases(t, addr, "phone", aliases, 0)
				if !present {
					t.Fatal("session not resumed")
				}
				got := readPacket(t, r, 5)
				if got.FixedHeader.Type != packets.Publish || string(got.Payload) != "two" || !got.FixedHeader.Dup {
					t.Fatalf("got %+v, want two resent", got)
				}
				if got.TopicName != "a/b" || got.Properties.TopicAlias != 0 {
					t.Fatalf("resent with topic %q and alias %d, want a/b without an alias", got.TopicName, got.Properties.TopicAlias)
				}
				writeV5(t, c, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: got.PacketID})

				// New deliveries on the new connection name their topic
				// before using an alias for it.
				if err := s.Publish("a/b", []byte("three"), false, 1); err != nil {
					t.Fatal(err)
				}
				got = readPacket(t, r, 5)
				if got.TopicName != "a/b" || string(got.Payload) != "three" {
					t.Fatalf("next delivery %q %q, want three on a/b", got.TopicName, got.Payload)
				}
			})
		}
	}
}

// The same for deliveries held back by the client's Receive Maximum when
// its connection dropped: released on the next connection as
// acknowledgements free the quota, they name their topic.
func TestHeldDeliveryNamesItsTopicOnTheNextConnection(t *testing.T) {
	for _, direct := range []bool{false, true} {
		t.Run(fmt.Sprintf("direct=%v", direct), func(t *testing.T) {
			s, addr := startAliasServer(t, direct)
			c, r, _ := connectAliases(t, addr, "phone", 10, 1)
			subscribeV5(t, c, 1, "a/b")
			if ack := readPacket(t, r, 5); ack.FixedHeader.Type != packets.Suback {
				t.Fatalf("SUBACK: %+v", ack)
			}
			for _, m := range []string{"one", "two", "three"} {
				if err := s.Publish("a/b", []byte(m), false, 1); err != nil {
					t.Fatal(err)
				}
			}
			if got := readPacket(t, r, 5); string(got.Payload) != "one" {
				t.Fatalf("got %q, want one", got.Payload)
			}
			_ = c.Close() // nothing acknowledged: two and three are held

			old, _ := s.Clients.Get("phone")
			waitUntil(t, "the first connection ended", old.Closed)
			c, r, _ = connectAliases(t, addr, "phone", 10, 1)
			for _, want := range []string{"one", "two", "three"} {
				got := readPacket(t, r, 5)
				if string(got.Payload) != want {
					t.Fatalf("got %q, want %s", got.Payload, want)
				}
				if got.TopicName != "a/b" {
					t.Fatalf("%s came with topic %q alias %d on the new connection, which was told no alias", want, got.TopicName, got.Properties.TopicAlias)
				}
				writeV5(t, c, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: got.PacketID})
			}
		})
	}
}

// A delivery is sent by alias only once the alias was sent with its topic
// on the connection [MQTT-3.3.2-12]: not when the delivery that gave the
// topic its alias is held back by the client's Receive Maximum (a QoS 0
// delivery goes out before it), nor when that delivery was never sent (too
// large for the client's Maximum Packet Size). Before, the topic got its
// alias when the first delivery was prepared, and the next ones went out
// by alias only whether or not the client had been told it.
func TestAliasOnlyAfterTheAliasWasSent(t *testing.T) {
	for _, direct := range []bool{false, true} {
		t.Run(fmt.Sprintf("held/direct=%v", direct), func(t *testing.T) {
			s, addr := startAliasServer(t, direct)
			c, r, _ := connectAliases(t, addr, "phone", 10, 1)
			for i, f := range []string{"x/y", "a/b"} {
				subscribeV5(t, c, uint16(i+1), f)
				if ack := readPacket(t, r, 5); ack.FixedHeader.Type != packets.Suback {
					t.Fatalf("SUBACK: %+v", ack)
				}
			}
			// "fill" takes the one slot; "one" is held back; "zero" (QoS 0)
			// is not.
			for _, m := range []struct {
				topic, payload string
				qos            byte
			}{{"x/y", "fill", 1}, {"a/b", "one", 1}, {"a/b", "zero", 0}} {
				if err := s.Publish(m.topic, []byte(m.payload), false, m.qos); err != nil {
					t.Fatal(err)
				}
			}
			fill := readPacket(t, r, 5)
			if string(fill.Payload) != "fill" {
				t.Fatalf("got %q, want fill", fill.Payload)
			}
			zero := readPacket(t, r, 5)
			if string(zero.Payload) != "zero" || zero.TopicName != "a/b" {
				t.Fatalf("got %q on topic %q (alias %d), want zero on a/b: the client was never told that alias",
					zero.Payload, zero.TopicName, zero.Properties.TopicAlias)
			}
			writeV5(t, c, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: fill.PacketID})
			if one := readPacket(t, r, 5); string(one.Payload) != "one" || one.TopicName != "a/b" {
				t.Fatalf("got %q on topic %q, want one on a/b", one.Payload, one.TopicName)
			}
		})
		t.Run(fmt.Sprintf("too large/direct=%v", direct), func(t *testing.T) {
			s, addr := startAliasServer(t, direct)
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = c.Close() })
			_ = c.SetReadDeadline(time.Now().Add(15 * time.Second))
			writeV5(t, c, packets.Packet{
				FixedHeader: packets.FixedHeader{Type: packets.Connect},
				Connect:     packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 60, ClientIdentifier: "phone"},
				Properties:  packets.Properties{TopicAliasMaximum: 10, MaximumPacketSize: 100},
			})
			r := bufio.NewReader(c)
			if ack := readPacket(t, r, 5); ack.FixedHeader.Type != packets.Connack || ack.ReasonCode != 0 {
				t.Fatalf("CONNACK: %+v", ack)
			}
			subscribeV5(t, c, 1, "a/b")
			if ack := readPacket(t, r, 5); ack.FixedHeader.Type != packets.Suback {
				t.Fatalf("SUBACK: %+v", ack)
			}
			big := make([]byte, 200)
			for _, p := range [][]byte{big, []byte("small")} {
				if err := s.Publish("a/b", p, false, 0); err != nil {
					t.Fatal(err)
				}
			}
			got := readPacket(t, r, 5)
			if string(got.Payload) != "small" || got.TopicName != "a/b" {
				t.Fatalf("got %q on topic %q (alias %d), want small on a/b: the client was never told that alias",
					got.Payload, got.TopicName, got.Properties.TopicAlias)
			}
		})
	}
}

// aliasSentFor reports whether cl's connection was told topic's alias.
func aliasSentFor(cl *Client, topic string) bool {
	a := cl.State.TopicAliases.Outbound
	a.RLock()
	defer a.RUnlock()
	_, ok := a.sent[topic]
	return ok
}
