package main

import (
	"context"
	"errors"
	"math"
	"time"
)

// Clock is the time source of the pacer; tests inject a fake one.
type Clock interface {
	Now() time.Time
	// Sleep waits d or until ctx ends (then it returns ctx's error).
	Sleep(ctx context.Context, d time.Duration) error
}

// wallClock is the real Clock.
type wallClock struct{}

var _ Clock = wallClock{}

func (wallClock) Now() time.Time { return time.Now() }

func (wallClock) Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// ErrBadRate is returned for a rate that is not positive.
var ErrBadRate = errors.New("rate must be positive")

// Pacer releases events at a fixed rate on an open-loop schedule: the
// n-th event is due at start + n/rate whatever happened before, so a
// slow server does not slow the offered load down (that would hide the
// latency the server caused — "coordinated omission"). An event that is
// already late is released at once.
type Pacer struct {
	clock    Clock
	start    time.Time
	interval float64 // nanoseconds between events, kept as float so that rates like 3/s do not drift
	n        int64
}

// NewPacer paces rate events per second, the first due at clock.Now()+offset.
func NewPacer(rate float64, offset time.Duration, clock Clock) (*Pacer, error) {
	if !(rate > 0) {
		return nil, ErrBadRate
	}
	if clock == nil {
		clock = wallClock{}
	}
	return &Pacer{clock: clock, start: clock.Now().Add(offset), interval: float64(time.Second) / rate}, nil
}

// Due is the scheduled time of event n (0-based).
func (p *Pacer) Due(n int64) time.Time {
	return p.start.Add(time.Duration(float64(n) * p.interval))
}

// Wait blocks until the next event is due and returns its scheduled time.
func (p *Pacer) Wait(ctx context.Context) (time.Time, error) {
	due := p.Due(p.n)
	if d := due.Sub(p.clock.Now()); d > 0 {
		if err := p.clock.Sleep(ctx, d); err != nil {
			return time.Time{}, err
		}
	} else if err := ctx.Err(); err != nil {
		return time.Time{}, err
	}
	p.n++
	return due, nil
}

// Released is the number of events released so far.
func (p *Pacer) Released() int64 { return p.n }

// Behind reports whether the next event is already due: a sender that
// is behind its schedule may buffer this event's write with the next.
func (p *Pacer) Behind() bool { return !p.Due(p.n).After(p.clock.Now()) }

// Unrelease takes back the last event Wait released (it was not used).
func (p *Pacer) Unrelease() {
	if p.n > 0 {
		p.n--
	}
}

// DueBefore is the number of events not yet released that are due
// before t.
func (p *Pacer) DueBefore(t time.Time) int64 {
	d := float64(t.Sub(p.start))
	if d <= 0 {
		return 0
	}
	// Events 0..m-1 are due before t: m = ceil(d / interval).
	m := int64(math.Ceil(d / p.interval))
	for m > 0 && !p.Due(m-1).Before(t) {
		m--
	}
	for p.Due(m).Before(t) {
		m++
	}
	return max(0, m-p.n)
}
