package testutil

import (
	"context"
	"sync"
)

// LaggingNode stands for a node of a cluster that has not applied the
// newest writes yet, for the unit tests of what waits on a read barrier
// (cluster.Raft.ReadBarrier) before it refuses: a test holds writes back
// with Hold, and Barrier, given to the code under test as its read
// barrier, applies them, as a follower's barrier returns once it has.
type LaggingNode struct {
	mu       sync.Mutex
	held     []func()
	barriers int
	down     error
}

// Hold keeps apply back until the next Barrier.
func (l *LaggingNode) Hold(apply func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.held = append(l.held, apply)
}

// SetDown makes Barrier fail with err (nil: succeed again), as when the
// node cannot reach its leader.
func (l *LaggingNode) SetDown(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.down = err
}

// Barrier applies what is held and returns nil, or returns the error of
// SetDown and applies nothing.
func (l *LaggingNode) Barrier(context.Context) error {
	l.mu.Lock()
	l.barriers++
	if l.down != nil {
		err := l.down
		l.mu.Unlock()
		return err
	}
	held := l.held
	l.held = nil
	l.mu.Unlock()
	for _, apply := range held {
		apply()
	}
	return nil
}

// Barriers counts the calls of Barrier.
func (l *LaggingNode) Barriers() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.barriers
}
