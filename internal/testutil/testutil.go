// Package testutil holds the small helpers that edgechat's tests share: a
// poll-until-true helper that replaces sleeps, a hand-driven clock, a
// goroutine-safe buffer for log output, a logger that drops everything
// and readers of Prometheus metrics. It imports nothing of edgechat's, so
// any package's tests can use it without an import cycle.
package testutil

import (
	"bytes"
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

// FakeClock is a clock that moves only when told, so that tests of
// expiry and rate limits are deterministic. It is safe for concurrent use;
// its Now method fits the `Now func() time.Time` fields of deps.
type FakeClock struct {
	mu  sync.Mutex
	now time.Time
}

// NewFakeClock returns a clock standing at start.
func NewFakeClock(start time.Time) *FakeClock { return &FakeClock{now: start} }

// Now returns the clock's time.
func (c *FakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock on by d (back, when d is negative).
func (c *FakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// Set puts the clock at t.
func (c *FakeClock) Set(t time.Time) {
	c.mu.Lock()
	c.now = t
	c.mu.Unlock()
}

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
