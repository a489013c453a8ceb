package region

import (
	"sync"
	"sync/atomic"
	"time"
)

// linkStats counts one link's traffic per direction, for the life of the
// bridge (across leadership changes of this node): out is what this
// node's link sent (messages acknowledged, ephemeral traffic is not
// sent by the link), in what the link connection received (ephemeral
// traffic of the other region) and what the other region's link
// brought (messages received).
type linkStats struct {
	msgsOut, bytesOut atomic.Uint64
	msgsIn, bytesIn   atomic.Uint64
	expired           atomic.Uint64

	mu    sync.Mutex
	up    bool
	since time.Time // of the last change of up
	// failure is why the last connection attempt of this node's link
	// failed; empty once one succeeded.
	failure string
}

// setFailure records why a connection attempt failed ("" for one that
// succeeded) and reports whether that is a change.
func (s *linkStats) setFailure(why string) bool {
	if s == nil {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	changed := s.failure != why
	s.failure = why
	return changed
}

func (s *linkStats) lastFailure() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.failure
}

func (s *linkStats) out(n int) {
	if s != nil {
		s.msgsOut.Add(1)
		s.bytesOut.Add(uint64(n))
	}
}

func (s *linkStats) in(n int) {
	if s != nil {
		s.msgsIn.Add(1)
		s.bytesIn.Add(uint64(n))
	}
}

func (s *linkStats) setUp(up bool, now time.Time) {
	if s == nil {
		return
	}
	s.mu.Lock()
	if s.up != up || s.since.IsZero() {
		s.up, s.since = up, now
	}
	s.mu.Unlock()
}

func (s *linkStats) state() (bool, time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.up, s.since
}

// outMany counts one publish carrying msgs messages.
func (s *linkStats) outMany(msgs, n int) {
	if s != nil {
		s.msgsOut.Add(uint64(msgs))
		s.bytesOut.Add(uint64(n))
	}
}
