package backoff

import (
	"context"
	"testing"
	"time"
)

func TestNextGrowsToTheCapAndResets(t *testing.T) {
	b := New(10*time.Millisecond, 50*time.Millisecond)
	want := []time.Duration{10, 20, 40, 50, 50}
	for i, w := range want {
		if got := b.Next(); got != w*time.Millisecond {
			t.Fatalf("Next #%d = %v, want %v", i, got, w*time.Millisecond)
		}
	}
	b.Reset()
	if got := b.Next(); got != 10*time.Millisecond {
		t.Fatalf("after Reset Next = %v, want 10ms", got)
	}
}

func TestFactor(t *testing.T) {
	b := &Backoff{Min: 100 * time.Millisecond, Max: time.Second, Factor: 3}
	for i, w := range []time.Duration{100, 300, 900, 1000} {
		if got := b.Next(); got != w*time.Millisecond {
			t.Fatalf("Next #%d = %v, want %v", i, got, w*time.Millisecond)
		}
	}
}

func TestMaxBelowMinUsesMin(t *testing.T) {
	b := New(time.Second, time.Millisecond)
	for range 3 {
		if got := b.Next(); got != time.Second {
			t.Fatalf("Next = %v, want 1s", got)
		}
	}
}

func TestSleepReturnsEarlyOnCancel(t *testing.T) {
	b := New(time.Hour, time.Hour)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	start := time.Now()
	if err := b.Sleep(ctx); err != context.Canceled {
		t.Fatalf("Sleep = %v, want context.Canceled", err)
	}
	if time.Since(start) > time.Second {
		t.Fatal("Sleep did not return early")
	}
	if err := New(time.Millisecond, time.Millisecond).Sleep(context.Background()); err != nil {
		t.Fatalf("Sleep = %v", err)
	}
}

func TestWaitStopsOnDone(t *testing.T) {
	done := make(chan struct{})
	close(done)
	if New(time.Hour, time.Hour).Wait(done) {
		t.Fatal("Wait = true after done was closed")
	}
	if !New(time.Millisecond, time.Millisecond).Wait(nil) {
		t.Fatal("Wait = false with no done")
	}
}
