// SPDX-License-Identifier: MIT
// SPDX-FileCopyrightText: 2023 mochi-mqtt, mochi-co

package mqtt

import (
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
)

// countingHook provides OnPublish (tagging the packet with its name) and
// OnACLCheck when acl is set, and counts how often it is asked what it
// provides.
type countingHook struct {
	HookBase
	name     string
	acl      bool
	provides int
}

func (h *countingHook) ID() string { return h.name }
func (h *countingHook) Provides(b byte) bool {
	h.provides++
	return b == OnPublish || (h.acl && b == OnACLCheck)
}
func (h *countingHook) OnPublish(cl *Client, pk packets.Packet) (packets.Packet, error) {
	if pk.TopicName == "t" || pk.TopicName == "t/a" {
		pk.TopicName += "/" + h.name
	}
	return pk, nil
}
func (h *countingHook) OnACLCheck(cl *Client, topic string, write bool) bool { return true }

// The hooks called for every packet are found by event, not by asking
// every hook's Provides for every call; the order they were added in is
// kept, and Hooks.Provides answers as before.
func TestHooksIndexedByEvent(t *testing.T) {
	h := new(Hooks)
	a, b := &countingHook{name: "a"}, &countingHook{name: "b", acl: true}
	for _, hk := range []Hook{a, b} {
		if err := h.Add(hk, nil); err != nil {
			t.Fatal(err)
		}
	}
	asked := a.provides + b.provides
	for i := 0; i < 10; i++ {
		pk, err := h.OnPublish(nil, packets.Packet{TopicName: "t"})
		if err != nil || pk.TopicName != "t/a/b" {
			t.Fatalf("OnPublish: %q, %v; want t/a/b in the order added", pk.TopicName, err)
		}
		if !h.OnACLCheck(nil, "t", true) {
			t.Fatal("OnACLCheck: b allows")
		}
		h.OnPublished(nil, pk)
		h.OnPacketSent(nil, pk, nil)
		_ = h.OnPacketEncode(nil, pk)
	}
	if n := a.provides + b.provides - asked; n != 0 {
		t.Fatalf("Provides asked %d times by 50 hook calls, want 0", n)
	}
	if !h.Provides(OnPublish) || !h.Provides(OnPacketRead, OnACLCheck) || h.Provides(OnPacketRead) || h.Provides() {
		t.Fatal("Hooks.Provides answers differently from the hooks")
	}
	if new(Hooks).Provides(OnPublish) {
		t.Fatal("no hooks provide nothing")
	}
}

// BenchmarkHooksPerPublish is the hook calls of a QoS 0 publish delivered
// to one subscriber, with one hook providing the usual events.
func BenchmarkHooksPerPublish(b *testing.B) {
	h := new(Hooks)
	if err := h.Add(&countingHook{name: "a", acl: true}, nil); err != nil {
		b.Fatal(err)
	}
	pk := packets.Packet{TopicName: "t", FixedHeader: packets.FixedHeader{Type: packets.Publish}}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if h.Provides(OnPacketRead) {
			pk, _ = h.OnPacketRead(nil, pk)
		}
		_ = h.OnACLCheck(nil, "t", true)
		npk, _ := h.OnPublish(nil, pk)
		_ = h.OnACLCheck(nil, "t", false)
		npk = h.OnPacketEncode(nil, npk)
		h.OnPacketSent(nil, npk, nil)
		h.OnPublished(nil, npk)
		if h.Provides(OnPacketProcessed) {
			h.OnPacketProcessed(nil, pk, nil)
		}
	}
}
