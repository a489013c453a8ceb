// SPDX-License-Identifier: MIT
// SPDX-FileCopyrightText: 2023 mochi-mqtt, mochi-co

package mqtt

import (
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
