package region

import (
	"context"
	"errors"
	"testing"
	"time"
)

// sampleN feeds f n PUBACKs of round trip rtt with inFlight in flight.
func sampleN(f *flow, n, inFlight int, rtt time.Duration, now time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.inFlight = inFlight
	for range n {
		f.sample(rtt, now)
	}
}

// The window shrinks while PUBACKs show publishes queued at the other
// region (round trips well over the base with many in flight), down to
// 1 at least, and grows back to max when the queue is gone; over a long
// link (a base round trip of 100 ms) a full window with a little queue
// keeps it open.
func TestFlowFollowsTheQueue(t *testing.T) {
	now := time.Now()
	f := newFlow(16)
	if w := f.window(); w != 16 {
		t.Fatalf("starts at %v, want 16", w)
	}
	sampleN(f, 1, 1, 5*time.Millisecond, now) // the base: one commit
	// 16 in flight, each waiting for 15 before it: ~80 ms.
	sampleN(f, 40, 16, 80*time.Millisecond, now)
	if w := f.window(); w > 14 {
		t.Fatalf("window %v after 40 queued PUBACKs, want it shrinking", w)
	}
	sampleN(f, 2000, 16, 80*time.Millisecond, now)
	if w := f.window(); w != 1 {
		t.Fatalf("window %v, want 1 under a queue that stays", w)
	}
	sampleN(f, 2000, 1, 5*time.Millisecond, now)
	if w := f.window(); w != 16 {
		t.Fatalf("window %v once the queue is gone, want 16", w)
	}

	long := newFlow(16)
	sampleN(long, 1, 1, 100*time.Millisecond, now)
	sampleN(long, 2000, 16, 110*time.Millisecond, now) // 16 × (1 − 100/110) ≈ 1.5 queued
	if w := long.window(); w != 16 {
		t.Fatalf("window %v over a long link with ~1.5 publishes queued, want 16", w)
	}
}

// The base round trip follows a path that got slower: after two
// periods only the new round trips count, and the window opens again.
func TestFlowBaseFollowsASlowerPath(t *testing.T) {
	now := time.Now()
	f := newFlow(8)
	sampleN(f, 1, 1, 5*time.Millisecond, now)
	sampleN(f, 500, 8, 50*time.Millisecond, now) // looks queued against 5 ms
	if w := f.window(); w != 1 {
		t.Fatalf("window %v, want 1", w)
	}
	later := now.Add(flowPeriod)
	sampleN(f, 1, 1, 50*time.Millisecond, later)
	sampleN(f, 1, 1, 50*time.Millisecond, later.Add(flowPeriod)) // 5 ms forgotten now
	sampleN(f, 500, 8, 50*time.Millisecond, later.Add(flowPeriod))
	if w := f.window(); w != 8 {
		t.Fatalf("window %v with every round trip at the new base, want 8", w)
	}
}

// acquire waits while the window is full, until a release or the
// connection's end.
func TestFlowAcquireWaitsForASlot(t *testing.T) {
	f := newFlow(2)
	ctx := context.Background()
	alive, end := context.WithCancel(ctx)
	for range 2 {
		if err := f.acquire(ctx, alive); err != nil {
			t.Fatal(err)
		}
	}
	// Full: an acquire whose ctx ended gets no slot.
	done, cancel := context.WithCancel(ctx)
	cancel()
	if err := f.acquire(done, alive); !errors.Is(err, context.Canceled) {
		t.Fatalf("a third acquire in a full window of 2: %v, want it waiting (canceled)", err)
	}
	got := make(chan error, 1)
	go func() { got <- f.acquire(ctx, alive) }()
	f.release(time.Millisecond, time.Now())
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	go func() { got <- f.acquire(ctx, alive) }()
	end()
	if err := <-got; !errors.Is(err, errLinkLost) {
		t.Fatalf("acquire after the connection ended: %v", err)
	}
}
