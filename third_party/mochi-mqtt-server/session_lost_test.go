// SPDX-License-Identifier: MIT

//go:build unix

package mqtt

import (
	"sync/atomic"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
)

// loseOnDrop counts the deliveries dropped and marks the session of each
// lost, as edgechat's broker does for a session left offline.
type loseOnDrop struct {
	allowAll
	dropped atomic.Int64
}

func (h *loseOnDrop) Provides(b byte) bool {
	return b == OnPublishDropped || h.allowAll.Provides(b)
}

func (h *loseOnDrop) OnPublishDropped(cl *Client, pk packets.Packet) {
	h.dropped.Add(1)
	cl.LoseSession()
}

// A QoS 1 delivery that does not fit the session's store (Maximum
// Inflight: here a session left offline, which only stores) is dropped,
// and the hooks are told (OnPublishDropped) under the session's lock, so
// that a hook may mark the session lost; a lost session is not resumed:
// the next CONNECT of the client identifier gets session present 0 and
// none of the old subscriptions or messages. Before, the drop was only
// logged: the session was resumed with the older messages and the
// client could not tell that one was missing (edgechat patch 45).
func TestADeliveryDroppedFromAFullSessionIsToldAndTheSessionLost(t *testing.T) {
	h := new(loseOnDrop)
	s, addr := startAliasServer(t, false, func(o *Options) {
		o.Capabilities = NewDefaultServerCapabilities()
		o.Capabilities.MaximumInflight = 4
	})
	if err := s.AddHook(h, nil); err != nil {
		t.Fatal(err)
	}
	c, r, _ := connectAliases(t, addr, "phone", 0, 0)
	subscribeV5(t, c, 1, "a/b")
	if ack := readPacket(t, r, 5); ack.FixedHeader.Type != packets.Suback {
		t.Fatalf("SUBACK: %+v", ack)
	}
	_ = c.Close()
	old, _ := s.Clients.Get("phone")
	waitUntil(t, "the connection ended", old.Closed)
	for i := 0; i < 5; i++ {
		if err := s.Publish("a/b", []byte{byte('0' + i)}, false, 1); err != nil {
			t.Fatal(err)
		}
	}
	if got := h.dropped.Load(); got != 1 {
		t.Fatalf("OnPublishDropped called %d times, want 1", got)
	}
	c, r, present := connectAliases(t, addr, "phone", 0, 0)
	if present {
		t.Fatal("a session that lost a delivery was resumed")
	}
	// Nothing of the lost session comes: not its messages, and not on its
	// subscription.
	if err := s.Publish("a/b", []byte("new"), false, 1); err != nil {
		t.Fatal(err)
	}
	subscribeV5(t, c, 2, "c/d")
	if ack := readPacket(t, r, 5); ack.FixedHeader.Type != packets.Suback {
		t.Fatalf("SUBACK: %+v", ack)
	}
	if err := s.Publish("c/d", []byte("mine"), false, 1); err != nil {
		t.Fatal(err)
	}
	if pk := readPacket(t, r, 5); pk.TopicName != "c/d" {
		t.Fatalf("the new session got %q on %q, of the lost session", pk.Payload, pk.TopicName)
	}
}
