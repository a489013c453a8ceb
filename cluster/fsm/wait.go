package fsm

import (
	"context"
	"errors"
	"fmt"
)

// resultRing is how many recent entries' results are kept for
// WaitApplied. A waiter registers only after it learns its index (from
// the leader's answer), and its own FSM may have applied the entry by
// then; the ring bridges that gap. Results are kept only while somebody
// holds RetainResults, so a node that never forwards pays nothing.
const resultRing = 1024

// ErrResultsLost means the entry was applied (or covered by a restored
// snapshot) but its results are no longer kept. The command committed;
// only its return value is unknown.
var ErrResultsLost = errors.New("fsm: results of the entry are no longer kept")

type ringSlot struct {
	index   uint64
	results []Result
}

type waitResult struct {
	results []Result
	err     error
}

// waits is the FSM's record of recently applied entries and of the
// goroutines waiting for entries to be applied. Guarded by FSM.wmu.
type waits struct {
	last    uint64 // highest index applied (or restored) in this process
	retain  int
	ring    [resultRing]ringSlot
	waiters map[uint64][]chan waitResult
}

// RetainResults makes the FSM keep the results of entries applied from
// now until release is called, so that WaitApplied finds an entry that
// was applied before its waiter registered. Call it before the entry can
// be appended (before forwarding a proposal to the leader).
func (f *FSM) RetainResults() (release func()) {
	f.wmu.Lock()
	f.w.retain++
	f.wmu.Unlock()
	var done bool
	return func() {
		f.wmu.Lock()
		if !done {
			done = true
			f.w.retain--
		}
		f.wmu.Unlock()
	}
}

// WaitApplied waits until the entry at index has been applied by this
// FSM and returns its results (one per command, as Apply returned them).
// It returns ErrResultsLost when the entry was applied but its results
// were not kept (nobody held RetainResults, more than 1024 entries went
// by, or a snapshot restore skipped the entry), and ctx's error, wrapped,
// when ctx ends first.
func (f *FSM) WaitApplied(ctx context.Context, index uint64) ([]Result, error) {
	f.wmu.Lock()
	if s := &f.w.ring[index%resultRing]; s.index == index && s.results != nil {
		res := s.results
		f.wmu.Unlock()
		return res, nil
	}
	if index <= f.w.last {
		f.wmu.Unlock()
		return nil, fmt.Errorf("%w (index %d)", ErrResultsLost, index)
	}
	ch := make(chan waitResult, 1)
	if f.w.waiters == nil {
		f.w.waiters = make(map[uint64][]chan waitResult)
	}
	f.w.waiters[index] = append(f.w.waiters[index], ch)
	f.wmu.Unlock()
	select {
	case r := <-ch:
		return r.results, r.err
	case <-ctx.Done():
		f.wmu.Lock()
		ws := f.w.waiters[index]
		for i, c := range ws {
			if c == ch {
				ws = append(ws[:i], ws[i+1:]...)
				break
			}
		}
		if len(ws) == 0 {
			delete(f.w.waiters, index)
		} else {
			f.w.waiters[index] = ws
		}
		f.wmu.Unlock()
		select {
		case r := <-ch: // answered while we were giving up
			return r.results, r.err
		default:
		}
		return nil, fmt.Errorf("fsm: waiting for entry %d: %w", index, ctx.Err())
	}
}

// LastApplied is the index of the last command entry this FSM applied
// (or a snapshot restore reached) since the process started. Raft's own
// AppliedIndex counts entries handed to the FSM, which may still be
// waiting in its queue.
func (f *FSM) LastApplied() uint64 {
	f.wmu.Lock()
	defer f.wmu.Unlock()
	return f.w.last
}

// applied records the results of the entry at index and wakes its waiters.
func (f *FSM) applied(index uint64, results []Result) {
	f.wmu.Lock()
	defer f.wmu.Unlock()
	if index > f.w.last {
		f.w.last = index
	}
	ws := f.w.waiters[index]
	if f.w.retain > 0 || len(ws) > 0 {
		f.w.ring[index%resultRing] = ringSlot{index: index, results: results}
	}
	if len(ws) > 0 {
		delete(f.w.waiters, index)
		for _, ch := range ws {
			ch <- waitResult{results: results}
		}
	}
}

// restored fails the waiters of entries a snapshot restore covered: those
// entries will never go through Apply here.
func (f *FSM) restored(index uint64) {
	f.wmu.Lock()
	defer f.wmu.Unlock()
	if index > f.w.last {
		f.w.last = index
	}
	for i, ws := range f.w.waiters {
		if i > index {
			continue
		}
		delete(f.w.waiters, i)
		for _, ch := range ws {
			ch <- waitResult{err: fmt.Errorf("%w (index %d, restored from a snapshot)", ErrResultsLost, i)}
		}
	}
}
