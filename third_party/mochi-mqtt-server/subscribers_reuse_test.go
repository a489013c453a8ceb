// SPDX-License-Identifier: MIT
// SPDX-FileCopyrightText: 2023 mochi-mqtt, mochi-co

package mqtt

import (
	"io"
	"log/slog"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
)

// A Subscribers given back after a publish serves the next one with
// nothing of the first left in it.
func TestSubscribersReusedWithoutLeftovers(t *testing.T) {
	x := NewTopicsIndex()
	x.Subscribe("cl1", packets.Subscription{Filter: "a/b"})
	x.Subscribe("cl2", packets.Subscription{Filter: "c/d"})
	for i := 0; i < 3; i++ {
		subs := x.subscribersOf("a/b")
		if len(subs.Subscriptions) != 1 || subs.Subscriptions["cl1"].Filter != "a/b" {
			t.Fatalf("a/b: %v", subs.Subscriptions)
		}
		x.releaseSubscribers(subs)
		subs = x.subscribersOf("c/d")
		if len(subs.Subscriptions) != 1 || subs.Subscriptions["cl2"].Filter != "c/d" {
			t.Fatalf("c/d after a/b: %v", subs.Subscriptions)
		}
		x.releaseSubscribers(subs)
		subs = x.subscribersOf("e/f")
		if len(subs.Subscriptions) != 0 {
			t.Fatalf("e/f after c/d: %v", subs.Subscriptions)
		}
		x.releaseSubscribers(subs)
	}
}

// Gathering the subscribers of a publish to a topic with one subscriber
// allocates nothing once a Subscribers has been given back.
func TestSubscribersOfReusesAllocations(t *testing.T) {
	x := NewTopicsIndex()
	x.Subscribe("cl1", packets.Subscription{Filter: "a/b"})
	x.releaseSubscribers(x.subscribersOf("a/b"))
	n := testing.AllocsPerRun(1000, func() {
		subs := x.subscribersOf("a/b")
		if len(subs.Subscriptions) != 1 {
			t.Fatalf("a/b: %v", subs.Subscriptions)
		}
		x.releaseSubscribers(subs)
	})
	if n != 0 {
		t.Fatalf("%v allocations per publish, want 0", n)
	}
}

// Subscribers that hooks were handed (shared subscriptions go through
// OnSelectSubscribers, which may keep them) are not reused.
func TestSubscribersHandedToHooksNotReused(t *testing.T) {
	x := NewTopicsIndex()
	x.Subscribe("cl1", packets.Subscription{Filter: SharePrefix + "/g/a/b"})
	x.Subscribe("cl2", packets.Subscription{Filter: "c/d"})
	kept := x.subscribersOf("a/b")
	if len(kept.Shared) != 1 {
		t.Fatalf("shared: %v", kept.Shared)
	}
	kept.SelectShared()
	x.releaseSubscribers(kept)
	for i := 0; i < 3; i++ {
		subs := x.subscribersOf("c/d")
		if subs == kept {
			t.Fatal("a Subscribers with shared subscriptions was reused")
		}
		x.releaseSubscribers(subs)
	}
	if len(kept.SharedSelected) != 1 || len(kept.Subscriptions) != 0 {
		t.Fatalf("kept changed: %+v", kept)
	}
}

// keepSubscribersHook keeps what OnSelectSubscribers is handed, after
// dropping its shared subscriptions (as edgechat's hook does for some
// topics).
type keepSubscribersHook struct {
	HookBase
	kept *Subscribers
}

func (h *keepSubscribersHook) ID() string           { return "keep" }
func (h *keepSubscribersHook) Provides(b byte) bool { return b == OnSelectSubscribers }
func (h *keepSubscribersHook) OnSelectSubscribers(subs *Subscribers, pk packets.Packet) *Subscribers {
	subs.Shared, subs.SharedSelected = nil, nil
	h.kept = subs
	return subs
}

// A publish whose Subscribers went through OnSelectSubscribers does not
// give it back for reuse, whatever the hook left in it.
func TestPublishKeepsSubscribersHandedToHooks(t *testing.T) {
	s := New(&Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	hook := new(keepSubscribersHook)
	if err := s.AddHook(hook, nil); err != nil {
		t.Fatal(err)
	}
	s.Topics.Subscribe("cl1", packets.Subscription{Filter: SharePrefix + "/g/a/b"})
	s.Topics.Subscribe("cl1", packets.Subscription{Filter: "a/b"})
	s.Topics.Subscribe("cl2", packets.Subscription{Filter: "c/d"})
	publish := func(topic string) {
		s.publishToSubscribers(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: topic})
	}
	publish("a/b")
	kept := hook.kept
	if kept == nil || len(kept.Subscriptions) != 1 {
		t.Fatalf("hook kept %+v", kept)
	}
	for i := 0; i < 3; i++ {
		publish("c/d")
		subs := s.Topics.subscribersOf("c/d")
		if subs == kept {
			t.Fatal("a Subscribers handed to hooks was reused")
		}
		s.Topics.releaseSubscribers(subs)
	}
	if _, ok := kept.Subscriptions["cl1"]; !ok || len(kept.Subscriptions) != 1 {
		t.Fatalf("kept changed: %v", kept.Subscriptions)
	}
}
