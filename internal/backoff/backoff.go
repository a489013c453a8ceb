// Package backoff is the one retry delay of edgechat: every loop that
// retries something that failed (a peer queue, an accept loop, joining a
// cluster, proposing to Raft) waits with it instead of its own copy of
// "double the delay up to a cap".
package backoff

import (
	"context"
	"time"
)

// Backoff is an exponential delay: Next returns Min first, then grows it
// by Factor up to Max; Reset starts over after a success. The zero Factor
// means 2; a Max below Min means a constant Min. A Backoff is used by one goroutine (it is not locked).
type Backoff struct {
	Min    time.Duration
	Max    time.Duration
	Factor float64

	cur time.Duration // the delay Next returns next; 0 before the first call
}

// New returns a Backoff from min to max, doubling.
func New(min, max time.Duration) *Backoff { return &Backoff{Min: min, Max: max} }

// Next returns the delay to wait before the next retry and grows it.
func (b *Backoff) Next() time.Duration {
	if b.cur <= 0 {
		b.cur = max(b.Min, 1)
	}
	d := min(b.cur, max(b.Max, b.Min))
	f := b.Factor
	if f <= 1 {
		f = 2
	}
	if next := time.Duration(float64(b.cur) * f); next > b.cur && next <= b.Max {
		b.cur = next
	} else {
		b.cur = max(b.Max, b.Min)
	}
	return d
}

// Reset makes the next delay Min again (call it after a success).
func (b *Backoff) Reset() { b.cur = 0 }

// Sleep waits Next(); it returns ctx's error when ctx ends first.
func (b *Backoff) Sleep(ctx context.Context) error {
	if !b.Wait(ctx.Done()) {
		return ctx.Err()
	}
	return nil
}

// Wait waits Next(); false when done is closed first (for loops that stop
// on a channel rather than a context).
func (b *Backoff) Wait(done <-chan struct{}) bool {
	t := time.NewTimer(b.Next())
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-done:
		return false
	}
}
