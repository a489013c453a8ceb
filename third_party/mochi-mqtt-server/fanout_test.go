// SPDX-License-Identifier: MIT
// SPDX-FileCopyrightText: 2023 mochi-mqtt, mochi-co

//go:build unix

package mqtt

import (
	"bytes"
	"io"
	"net"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
)

// fanoutScenario publishes one QoS 1 packet with properties to clients
// that differ in what their copy encodes to (protocol version, QoS,
// subscription identifier, topic alias, packet ID) and to some that do
// not, each on a TCP connection with direct writes, and returns the bytes
// each one received. shared publishes through publishToSubscribers (the
// encoding shared between deliveries); otherwise each subscriber gets its
// packet from publishToClient, encoded on its own.
func fanoutScenario(t *testing.T, shared bool) map[string][]byte {
	t.Helper()
	s := New(&Options{Logger: directTestLogger, ClientDirectWrites: true})
	s.Options.Capabilities.MaximumClientWritesPending = 16
	s.Options.Capabilities.MaximumMessageExpiryInterval = 0 // no expiry counted down between the two runs
	if err := s.AddHook(new(allowFanoutHook), nil); err != nil {
		t.Fatal(err)
	}
	type sub struct {
		id      string
		version byte
		sub     packets.Subscription
		setup   func(cl *Client)
	}
	subs := []sub{
		{id: "v5-a", version: 5, sub: packets.Subscription{Filter: "a/b"}},
		{id: "v5-b", version: 5, sub: packets.Subscription{Filter: "a/+"}},
		{id: "v3", version: 4, sub: packets.Subscription{Filter: "a/b"}},
		{id: "v5-qos1-a", version: 5, sub: packets.Subscription{Filter: "a/b", Qos: 1}},
		{id: "v5-qos1-b", version: 5, sub: packets.Subscription{Filter: "a/b", Qos: 1},
			setup: func(cl *Client) { cl.State.packetID = 100 }},
		{id: "v5-qos1-subid", version: 5, sub: packets.Subscription{Filter: "a/b", Qos: 1, Identifier: 5}},
		{id: "v5-alias", version: 5, sub: packets.Subscription{Filter: "a/b"},
			setup: func(cl *Client) {
				cl.Properties.Props.TopicAliasMaximum = 4
				cl.State.TopicAliases.Outbound = NewOutboundTopicAliases(4)
			}},
		{id: "v5-no-problem-info", version: 5, sub: packets.Subscription{Filter: "a/b"},
			setup: func(cl *Client) {
				cl.Properties.Props.RequestProblemInfoFlag = true
				cl.Properties.Props.RequestProblemInfo = 0
			}},
	}
	peers := map[string]net.Conn{}
	conns := []net.Conn{}
	clients := map[string]*Client{}
	for _, sb := range subs {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		peer, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c, err := ln.Accept()
		ln.Close()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close(); peer.Close() })
		cl := s.NewClient(c, "tcp", sb.id, false)
		cl.Properties.ProtocolVersion = sb.version
		if sb.setup != nil {
			sb.setup(cl)
		}
		s.Clients.Add(cl)
		s.Topics.Subscribe(cl.ID, sb.sub)
		peers[sb.id] = peer
		conns = append(conns, c)
		clients[sb.id] = cl
	}

	pk := packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Publish, Qos: 1},
		ProtocolVersion: 5,
		TopicName:       "a/b",
		Payload:         []byte("fan-out payload"),
		Origin:          "publisher",
		Properties: packets.Properties{
			ContentType: "text/plain",
			User:        []packets.UserProperty{{Key: "from", Val: "publisher"}},
		},
	}
	if shared {
		s.publishToSubscribers(pk)
	} else {
		for id, sub := range s.Topics.Subscribers(pk.TopicName).Subscriptions {
			if _, err := s.publishToClient(clients[id], sub, pk); err != nil {
				t.Fatal(err)
			}
		}
	}

	// Every delivery was written at once (small packets, empty sockets):
	// closing the server's ends makes each peer read exactly what it got.
	for _, c := range conns {
		c.Close()
	}
	got := map[string][]byte{}
	for id, peer := range peers {
		b, err := io.ReadAll(peer)
		if err != nil {
			t.Fatal(err)
		}
		got[id] = b
	}
	return got
}

// allowFanoutHook allows every delivery.
type allowFanoutHook struct{ HookBase }

func (h *allowFanoutHook) ID() string                            { return "allow" }
func (h *allowFanoutHook) Provides(b byte) bool                  { return b == OnACLCheck }
func (h *allowFanoutHook) OnACLCheck(*Client, string, bool) bool { return true }

func TestPublishEncodedOncePerPublish(t *testing.T) {
	want := fanoutScenario(t, false)
	got := fanoutScenario(t, true)
	for id, b := range want {
		if !bytes.Equal(got[id], b) {
			t.Errorf("%s got\n%x\nwant\n%x", id, got[id], b)
		}
	}
	// The scenario has both kinds: deliveries that share an encoding and
	// deliveries that differ from it (here in the packet ID only).
	if !bytes.Equal(got["v5-a"], got["v5-b"]) {
		t.Error("two v5 QoS 0 subscribers got different bytes")
	}
	if bytes.Equal(got["v5-qos1-a"], got["v5-qos1-b"]) || len(got["v5-qos1-a"]) != len(got["v5-qos1-b"]) {
		t.Error("two QoS 1 subscribers should differ in their packet IDs only")
	}
	if bytes.Equal(got["v5-a"], got["v3"]) || bytes.Equal(got["v5-a"], got["v5-alias"]) ||
		bytes.Equal(got["v5-a"], got["v5-no-problem-info"]) {
		t.Error("subscribers whose packets differ got the same bytes")
	}
}
