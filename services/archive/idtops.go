package archive

import (
	"sync"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/internal/snowflake"
)

// idTops lets the message handler skip the lookup of m/{id} that checks
// a new message's ID is free (checkIDFree): it keeps, per machine number
// of the ID, a bound at or above every message ID of that machine number
// that is stored or pending in the FSM's transaction. An ID above its
// machine's bound cannot be stored, whatever wrote the data (an older
// version, a snapshot, a node with the same machine number): no Get. An
// ID at or below it (a clash, a retry of a half-written command, IDs
// arriving out of order) is looked up as before, so the answer is
// always the lookup's.
//
// Each node's generator hands out increasing IDs for its own machine
// number, so on a lone node and on every node of a cluster almost every
// message is above its machine's bound: the miss walked the memtables
// and every level's bloom filter (half of the Txn.Get time of a
// saturated node).
//
// The bounds only ever move up, and are raised when a handler writes
// m/{id}, before the transaction commits: a write that is thrown away
// (ErrTxnTooBig, then redone) leaves a bound higher than needed, which
// costs a lookup, never a wrong answer. They start (and start again
// after a snapshot restore, purge) from the highest stored ID found by
// one reverse seek over m/, a bound for every machine number at once.
// Like the summary cache, it runs on the FSM's apply goroutine; the
// mutex is for tests that apply from several.
type idTops struct {
	mu    sync.Mutex
	valid bool
	top   [snowflake.MaxMachine + 1]snowflake.ID

	lookups uint64 // m/ lookups done (tests check the fast path is taken)
}

// mayBeTaken reports whether id may already hold a message and must be
// looked up. tx is the FSM's transaction, read once to find the first
// bound.
func (t *idTops) mayBeTaken(tx *badger.Txn, id snowflake.ID) (bool, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.valid {
		hi, err := lastIndexed(tx, msgPrefix()) // sees the transaction's pending writes too
		if err != nil {
			return true, err
		}
		for i := range t.top {
			t.top[i] = snowflake.ID(hi)
		}
		t.valid = true
	}
	if id > t.top[id.Machine()] {
		return false, nil
	}
	t.lookups++
	return true, nil
}

// wrote raises id's machine bound to id: call it when m/{id} is written.
func (t *idTops) wrote(id snowflake.ID) {
	t.mu.Lock()
	if m := id.Machine(); t.valid && id > t.top[m] {
		t.top[m] = id
	}
	t.mu.Unlock()
}

// purge forgets the bounds (a snapshot replaced the state).
func (t *idTops) purge() {
	t.mu.Lock()
	t.valid = false
	t.mu.Unlock()
}

func (t *idTops) lookupCount() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.lookups
}

// fsmState is what the archive's FSM handlers keep next to Badger: the
// outbox they stage into and the in-memory state that spares them
// lookups, each exact (see summaryCache, idTops and cidFilter) and emptied when a
// snapshot replaces the state.
type fsmState struct {
	outbox Outbox
	sums   *summaryCache
	ids    *idTops
	cids   *cidFilter
}

func (s *fsmState) purge() {
	s.sums.purge()
	s.ids.purge()
	s.cids.purge()
}
