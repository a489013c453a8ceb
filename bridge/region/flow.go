package region

import (
	"context"
	"sync"
	"time"
)

// flow is a link connection's window (window.go): how many batch
// publishes may be in flight, at most max. The other region commits a
// connection's publishes one after another, so publishes beyond what
// the round trip needs only wait in its queue, adding their wait to the
// latency of every message behind them (over a fast link each carries
// few messages, each costing a commit). Like TCP Vegas, flow estimates
// that queue from each publish's time to its PUBACK against the
// shortest seen lately (base: the round trip plus one commit) —
// queued ≈ in flight × (1 − base/rtt) publishes — and lets cwnd grow (by 1
// per window of PUBACKs) while fewer than flowLow are queued, shrink
// while more than flowHigh are. It starts at max, as a plain window of
// max would: a backlog after an outage is sent at once.
type flow struct {
	max  int
	free chan struct{} // a token when a slot was freed (one acquirer: the link's peerqueue loop)

	mu       sync.Mutex
	inFlight int
	cwnd     float64
	base     time.Duration // the shortest round trip of this period and the one before
	cur      time.Duration // the shortest of this period
	period   time.Time     // when this period started
}

// Thresholds of flow, in publishes queued at the other region.
const (
	flowLow  = 1.0
	flowHigh = 3.0
	// flowPeriod: the base round trip is the shortest of the last one
	// to two periods, so that it follows a path that got slower.
	flowPeriod = 10 * time.Second
)

func newFlow(max int) *flow {
	if max <= 0 {
		max = linkWindow
	}
	return &flow{max: max, cwnd: float64(max), free: make(chan struct{}, 1)}
}

// acquire takes a slot, waiting while cwnd are in flight; an error when
// alive or ctx ended first.
func (f *flow) acquire(ctx, alive context.Context) error {
	for {
		f.mu.Lock()
		if f.inFlight < max(1, int(f.cwnd)) {
			f.inFlight++
			f.mu.Unlock()
			return nil
		}
		f.mu.Unlock()
		select {
		case <-f.free:
		case <-alive.Done():
			return errLinkLost
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// release frees a slot: its publish's PUBACK came after rtt, or (rtt 0)
// the connection ended first.
func (f *flow) release(rtt time.Duration, now time.Time) {
	f.mu.Lock()
	if rtt > 0 {
		f.sample(rtt, now)
	}
	f.inFlight--
	f.mu.Unlock()
	select {
	case f.free <- struct{}{}:
	default:
	}
}

// sample adjusts cwnd to a round trip rtt measured at now, with
// inFlight publishes (this one included) in flight: of those, about
// inFlight × (1 − base/rtt) waited in the other region's queue (Vegas
// uses cwnd, assuming a full window; a link often has fewer to send).
func (f *flow) sample(rtt time.Duration, now time.Time) {
	if f.period.IsZero() || now.Sub(f.period) >= flowPeriod {
		f.base, f.cur, f.period = f.cur, 0, now
	}
	if f.cur == 0 || rtt < f.cur {
		f.cur = rtt
	}
	if f.base == 0 || rtt < f.base {
		f.base = rtt
	}
	queued := float64(f.inFlight) * (1 - float64(f.base)/float64(rtt))
	switch {
	case queued < flowLow:
		f.cwnd = min(float64(f.max), f.cwnd+1/f.cwnd)
	case queued > flowHigh:
		f.cwnd = max(1, f.cwnd-1/f.cwnd)
	}
}

// window is cwnd now.
func (f *flow) window() float64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cwnd
}
