// Package testutil holds the small helpers that edgechat's tests share: a
// poll-until-true helper that replaces sleeps, a hand-driven clock with
// tickers, a goroutine-safe buffer for log output, a logger that drops
// everything, an in-memory snapshot sink and readers of Prometheus
// metrics (the MQTT test client is in testutil/mqtttest). It imports nothing of edgechat's, so
// any package's tests can use it without an import cycle.
package testutil

import (
	"bytes"
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"
)

// CheckFor calls fn every `every` until it returns nil, and fails the test
// with fn's last error once total has passed. Tests wait with it instead
// of sleeping for a guessed time.
func CheckFor(t testing.TB, total, every time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(total)
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met after %v: %v", total, err)
		}
		<-tick.C
	}
}

// Receive returns the next value from ch, failing the test when none
// comes within d (a Run that must return, a message that must arrive).
func Receive[T any](t testing.TB, ch <-chan T, within time.Duration) T {
	t.Helper()
	timer := time.NewTimer(within)
	defer timer.Stop()
	select {
	case v := <-ch:
		return v
	case <-timer.C:
		t.Fatalf("nothing received within %v", within)
		var zero T
		return zero
	}
}

// FakeClock is a clock that moves only when told, so that tests of
// expiry, timers and rate limits are deterministic. It is safe for
// concurrent use; its Now method fits the `Now func() time.Time` fields
// of deps, its tickers fire when Advance passes their time, and Sleep
// moves it on instead of waiting.
type FakeClock struct {
	mu      sync.Mutex
	now     time.Time
	tickers []*FakeTicker
	slept   []time.Duration
}

// NewFakeClock returns a clock standing at start.
func NewFakeClock(start time.Time) *FakeClock { return &FakeClock{now: start} }

// Now returns the clock's time.
func (c *FakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock on by d (back, when d is negative) and fires
// the tickers that came due, dropping the ticks a slow reader missed as
// time.Ticker does.
func (c *FakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	for _, t := range c.tickers {
		for !t.stopped && !t.next.After(c.now) {
			select {
			case t.c <- t.next:
			default:
			}
			t.next = t.next.Add(t.period)
		}
	}
}

// Set puts the clock at t (tickers do not fire).
func (c *FakeClock) Set(t time.Time) {
	c.mu.Lock()
	c.now = t
	c.mu.Unlock()
}

// Sleep moves the clock on by d at once, and records d (see Slept); it
// returns ctx's error instead when ctx is done.
func (c *FakeClock) Sleep(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.mu.Lock()
	c.slept = append(c.slept, d)
	c.mu.Unlock()
	c.Advance(d)
	return nil
}

// Slept returns what Sleep was asked to sleep, in order, and forgets it.
func (c *FakeClock) Slept() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.slept
	c.slept = nil
	return s
}

// NewTicker returns a ticker that fires every d of the clock's time.
func (c *FakeClock) NewTicker(d time.Duration) *FakeTicker {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &FakeTicker{clock: c, c: make(chan time.Time, 1), period: d, next: c.now.Add(d)}
	c.tickers = append(c.tickers, t)
	return t
}

// LiveTickers is the number of tickers not stopped.
func (c *FakeClock) LiveTickers() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, t := range c.tickers {
		if !t.stopped {
			n++
		}
	}
	return n
}

// FakeTicker is a ticker of a FakeClock.
type FakeTicker struct {
	clock   *FakeClock
	c       chan time.Time
	period  time.Duration
	next    time.Time // guarded by clock.mu
	stopped bool      // guarded by clock.mu
}

// C delivers the ticks.
func (t *FakeTicker) C() <-chan time.Time { return t.c }

// Stop turns the ticker off.
func (t *FakeTicker) Stop() {
	t.clock.mu.Lock()
	t.stopped = true
	t.clock.mu.Unlock()
}

// SnapshotSink is an in-memory raft.SnapshotSink: what the snapshot
// wrote, and whether it closed or cancelled the sink.
type SnapshotSink struct {
	bytes.Buffer
	Closed, Canceled bool
}

// ID names the sink.
func (s *SnapshotSink) ID() string { return "testutil" }

// Close marks the snapshot complete.
func (s *SnapshotSink) Close() error { s.Closed = true; return nil }

// Cancel marks the snapshot abandoned.
func (s *SnapshotSink) Cancel() error { s.Canceled = true; return nil }

// SyncBuffer is a bytes.Buffer that several goroutines may write to at
// once, such as a logger's sink read by the test. The zero value is ready.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns everything written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// QuietLogger returns a logger that discards every record, for tests
// whose subject logs but whose log is not under test.
func QuietLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
