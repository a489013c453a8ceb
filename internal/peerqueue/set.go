package peerqueue

import (
	"slices"
	"sort"
	"sync"
)

// Set is one Queue per peer: created by the first Push for the peer,
// dropped by Drop or Retain when the peer goes away. The queues share
// the Set's Config (and so its Metrics) and Sender.
type Set[T any] struct {
	send Sender[T]
	cfg  Config[T]

	mu     sync.Mutex
	queues map[string]*Queue[T]
	old    []*Queue[T] // dropped queues whose sender may still run (Wait)
	closed bool
}

// NewSet returns an empty set whose queues send with send.
func NewSet[T any](send Sender[T], cfg Config[T]) *Set[T] {
	return &Set[T]{send: send, cfg: cfg.withDefaults(), queues: map[string]*Queue[T]{}}
}

// Metrics are the set's metrics (for the owner's own drop reasons).
func (s *Set[T]) Metrics() *Metrics { return s.cfg.Metrics }

// Push queues items for peer, starting its queue if needed. Errors as
// Queue.Push; after Close ErrClosed (counted as closed).
func (s *Set[T]) Push(peer string, items ...T) error {
	s.mu.Lock()
	q := s.queues[peer]
	if q == nil {
		if s.closed {
			s.mu.Unlock()
			s.cfg.Metrics.Dropped(peer, ReasonClosed, len(items))
			return ErrClosed
		}
		q = New(peer, s.send, s.cfg)
		s.queues[peer] = q
	}
	s.mu.Unlock()
	// A Drop between here and Push makes it ErrClosed, counted: the same
	// as a Push just after the Drop.
	return q.Push(items...)
}

// Len is the number of items pending for peer; false when peer has no
// queue.
func (s *Set[T]) Len(peer string) (int, bool) {
	s.mu.Lock()
	q := s.queues[peer]
	s.mu.Unlock()
	if q == nil {
		return 0, false
	}
	return q.Len(), true
}

// Peers are the peers that have a queue, sorted.
func (s *Set[T]) Peers() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.queues))
	for p := range s.queues {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

// Drop closes peer's queue, counting its pending items with reason; it
// returns their number, and false when peer had no queue.
func (s *Set[T]) Drop(peer, reason string) (int, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.queues[peer]
	if q == nil {
		return 0, false
	}
	return s.dropLocked(q, reason), true
}

// Retain drops the queue of every peer for which keep is false (counted
// with reason) and returns the number of items dropped per peer.
func (s *Set[T]) Retain(keep func(peer string) bool, reason string) map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out map[string]int
	for peer, q := range s.queues {
		if keep(peer) {
			continue
		}
		if out == nil {
			out = map[string]int{}
		}
		out[peer] = s.dropLocked(q, reason)
	}
	return out
}

// dropLocked closes q with the set locked, so that a new queue for the
// same peer cannot start before the old one removed its gauge.
func (s *Set[T]) dropLocked(q *Queue[T], reason string) int {
	delete(s.queues, q.peer)
	n := q.Close(reason)
	// Forget the senders that have returned: a long-lived set sees peers
	// come and go.
	s.old = slices.DeleteFunc(s.old, func(o *Queue[T]) bool {
		select {
		case <-o.done:
			return true
		default:
			return false
		}
	})
	s.old = append(s.old, q)
	return n
}

// Close drops every queue (pending items counted as closed); later
// Pushes fail with ErrClosed.
func (s *Set[T]) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for _, q := range s.queues {
		s.dropLocked(q, ReasonClosed)
	}
}

// Wait waits for the sender goroutines of every dropped queue (after
// Close: all of them).
func (s *Set[T]) Wait() {
	s.mu.Lock()
	old := s.old
	s.old = nil
	s.mu.Unlock()
	for _, q := range old {
		q.Wait()
	}
}
