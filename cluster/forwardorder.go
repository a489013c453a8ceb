package cluster

import (
	"math/rand/v2"
	"slices"
	"sync"
	"time"
)

// Forwarded batches keep their order.
//
// A follower sends up to maxForwardsInFlight batches at once, in the
// order its proposals were made, over one connection; the leader's RPC
// server handles each request on a goroutine of its own, so two batches
// could reach the leader's batcher the other way round and commit out of
// order: a connection's messages on a follower then had increasing IDs
// but not increasing commit sequence numbers (sync, which follows commit
// order, showed them out of order). The follower numbers its batches
// (Epoch: one per process, Seq: 1, 2, ...), and the leader hands a batch
// to its batcher only after the one before it from the same follower:
// a batch waits at most forwardOrderWait for its predecessor, which is
// lost only when a connection broke or a leader changed (then order is
// not restored, as before, and nothing is lost). Only the hand-off to
// the batcher is ordered; the commits of several batches still overlap.
// A leader of an earlier version ignores the numbers; a follower of one
// sends none and is not ordered.

// forwardOrderWait bounds how long a forwarded batch waits for the one
// numbered before it.
const forwardOrderWait = 200 * time.Millisecond

// forwardSeq numbers a follower's batches and knows which are still out
// (at most maxForwardsInFlight).
type forwardSeq struct {
	epoch uint64 // this process's: a restarted follower numbers anew
	mu    sync.Mutex
	last  uint64
	out   []uint64 // numbers sent and not yet answered, ascending
}

func newForwardSeq() *forwardSeq { return &forwardSeq{epoch: rand.Uint64() | 1} }

// next numbers the next batch (the forwarder's goroutine, in the order
// the proposals were made).
func (s *forwardSeq) next() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.last++
	s.out = append(s.out, s.last)
	return s.last
}

// low is the oldest batch still out: every batch before it has been
// answered, so a leader need not wait for it.
func (s *forwardSeq) low() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.out) == 0 {
		return s.last + 1
	}
	return s.out[0]
}

// done marks batch seq answered.
func (s *forwardSeq) done(seq uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if i := slices.Index(s.out, seq); i >= 0 {
		s.out = slices.Delete(s.out, i, i+1)
	}
}

// forwardOrder is the leader's side: per follower, the batch whose turn
// it is.
type forwardOrder struct {
	mu    sync.Mutex
	peers map[string]*orderState
}

type orderState struct {
	epoch   uint64
	next    uint64        // the Seq whose turn it is
	changed chan struct{} // closed and replaced when next moves
}

// wait blocks until batch seq of follower from (in its epoch) may go to
// the batcher: the batch before it has gone, or forwardOrderWait has
// passed. low is the follower's oldest batch still out when it sent
// this one: those before it were all answered (by this leader or
// another), so none of them is waited for. The returned function marks
// the batch gone; it must be called once the batch is handed over (or
// refused), and may be called more than once. A batch with no number
// (seq 0) waits for nothing.
func (o *forwardOrder) wait(from string, epoch, seq, low uint64) func() {
	if seq == 0 || from == "" {
		return func() {}
	}
	o.mu.Lock()
	if o.peers == nil {
		o.peers = make(map[string]*orderState)
	}
	st := o.peers[from]
	if st == nil || st.epoch != epoch {
		// A follower first seen, or started again.
		st = &orderState{epoch: epoch, next: min(low, seq), changed: make(chan struct{})}
		o.peers[from] = st
	} else if low > st.next && low <= seq {
		// Those before low were answered elsewhere (another leader), or
		// lost: nothing to wait for.
		st.next = low
	}
	var timer *time.Timer
	for seq > st.next {
		if timer == nil {
			timer = time.NewTimer(forwardOrderWait)
			defer timer.Stop()
		}
		ch := st.changed
		o.mu.Unlock()
		select {
		case <-ch:
			o.mu.Lock()
			continue
		case <-timer.C:
		}
		o.mu.Lock()
		break // the one before it is lost: go
	}
	o.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			o.mu.Lock()
			defer o.mu.Unlock()
			if cur := o.peers[from]; cur == st && seq >= st.next {
				st.next = seq + 1
				close(st.changed)
				st.changed = make(chan struct{})
			}
		})
	}
}
