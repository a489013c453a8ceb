// SPDX-License-Identifier: MIT

//go:build unix

package mqtt

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// A session that expires takes its subscriptions with it [MQTT-4.1.0-2]:
// a new session with the same client identifier (clean start, or one
// that finds no session to resume) gets nothing on the filters the
// expired one had. Before, clearExpiredClients only took the client out
// of the client map and left its subscriptions in the topic index, keyed
// by client identifier, so the new session received the messages of
// filters it never subscribed to.
func TestExpiredSessionTakesItsSubscriptions(t *testing.T) {
	for _, direct := range []bool{false, true} {
		for _, resume := range []bool{false, true} {
			t.Run(fmt.Sprintf("direct=%v/resume=%v", direct, resume), func(t *testing.T) {
				s, addr := startAliasServer(t, direct)
				c, r, _ := connectAliases(t, addr, "phone", 0, 0)
				subscribeV5(t, c, 1, "old/topic")
				if ack := readPacket(t, r, 5); ack.FixedHeader.Type != packets.Suback {
					t.Fatalf("SUBACK: %+v", ack)
				}
				_ = c.Close()
				old, _ := s.Clients.Get("phone")
				waitUntil(t, "the first connection ended", old.Closed)
				s.clearExpiredClients(time.Now().Unix() + 3600) // its 600 s have passed
				if _, ok := s.Clients.Get("phone"); ok {
					t.Fatal("the session did not expire")
				}

				var present bool
				if resume {
					c, r, present = connectAliases(t, addr, "phone", 0, 0)
				} else {
					c, r = dialConnectV5Clean(t, addr, "phone")
				}
				if present {
					t.Fatal("an expired session was resumed")
				}
				subscribeV5(t, c, 1, "new/topic")
				if ack := readPacket(t, r, 5); ack.FixedHeader.Type != packets.Suback {
					t.Fatalf("SUBACK: %+v", ack)
				}
				for _, topic := range []string{"old/topic", "new/topic"} {
					if err := s.Publish(topic, []byte(topic), false, 0); err != nil {
						t.Fatal(err)
					}
				}
				if got := readPacket(t, r, 5); got.TopicName != "new/topic" {
					t.Fatalf("the new session got %q on %q, a filter of the expired one", got.Payload, got.TopicName)
				}
			})
		}
	}
}

// dialConnectV5Clean connects client id with a clean start and no
// session expiry.
func dialConnectV5Clean(t *testing.T, addr, id string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetReadDeadline(time.Now().Add(15 * time.Second))
	writeV5(t, c, packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Connect},
		Connect:     packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 60, ClientIdentifier: id},
	})
	r := bufio.NewReader(c)
	if ack := readPacket(t, r, 5); ack.FixedHeader.Type != packets.Connack || ack.ReasonCode != 0 || ack.SessionPresent {
		t.Fatalf("CONNACK: %+v", ack)
	}
	return c, r
}

// The server's Maximum Session Expiry Interval also bounds the interval a
// client sets in its DISCONNECT (MQTT 5 3.14.2.2.2; the server told the
// client its maximum in the CONNACK). Before, a DISCONNECT with 0xFFFFFFFF
// kept the session, its subscriptions and its queue for good.
func TestDisconnectCannotExtendTheSessionPastTheMaximum(t *testing.T) {
	s, addr := startAliasServer(t, false, func(o *Options) {
		o.Capabilities = NewDefaultServerCapabilities()
		o.Capabilities.MaximumSessionExpiryInterval = 60
	})
	c, r, _ := connectAliases(t, addr, "phone", 0, 0) // asks for 600 s, gets 60
	subscribeV5(t, c, 1, "a/b")
	if ack := readPacket(t, r, 5); ack.FixedHeader.Type != packets.Suback {
		t.Fatalf("SUBACK: %+v", ack)
	}
	var buf bytes.Buffer
	d := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}, ProtocolVersion: 5,
		Properties: packets.Properties{SessionExpiryInterval: 0xFFFFFFFF, SessionExpiryIntervalFlag: true}}
	if err := d.DisconnectEncode(&buf); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(buf.Bytes()); err != nil {
		t.Fatal(err)
	}
	old, _ := s.Clients.Get("phone")
	waitUntil(t, "the connection ended", old.Closed)
	s.clearExpiredClients(time.Now().Unix() + 3600)
	if _, ok := s.Clients.Get("phone"); ok {
		t.Fatal("the session outlived the server's maximum session expiry")
	}
}
