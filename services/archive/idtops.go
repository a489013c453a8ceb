package archive

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/internal/snowflake"
)

// idTops lets the message handler skip the lookups (c/ and m/) that check
// a new message's ID is free (checkIDFree). Per machine number of the
// ID it keeps a floor, and next to the floors the IDs written most
// recently (a window of recentIDs): every message ID of that machine
// number that is stored or pending in the FSM's transaction is either
// at or below its machine's floor or in the window. An ID above its
// floor and not in the window cannot be stored, whatever wrote the data
// (an older version, a snapshot, a node with the same machine number):
// no Get. Any other ID (a clash, a retry of a half-written command, an
// ID older than the window) is looked up as before, so the answer is
// always the lookup's.
//
// Each node's generator hands out increasing IDs for its own machine
// number, but the messages reach the log a little out of that order:
// a publish takes its ID before the checks that precede the proposal
// (recipient, block list, media), and publishes run concurrently. A
// bound alone (the highest ID per machine) sent every message overtaken
// by a later one to the lookup (5% of three saturated nodes' CPU);
// with the window only an ID that arrives more than recentIDs messages
// late is looked up.
//
// When an ID leaves the window its machine's floor rises to it, which
// keeps the rule: IDs that left earlier are below the floor, those that
// did not are in the window. Floors only move up and the window only
// gains IDs when a handler writes a message, before the transaction
// commits: a write that is thrown away (ErrTxnTooBig, then redone)
// leaves an ID in the window or a floor higher than needed, which costs
// a lookup, never a wrong answer. The floors start (and start again
// after a snapshot restore, purge) from the highest stored ID found by
// one reverse seek over m/ and the top key (highestID), a floor for
// every machine number at once. Like the summary cache, it runs on the
// FSM's apply goroutine; the mutex is for tests that apply from several.
type idTops struct {
	mu    sync.Mutex
	valid bool
	floor [snowflake.MaxMachine + 1]snowflake.ID

	recent map[snowflake.ID]struct{}
	ring   []snowflake.ID // recent in the order written; next is the oldest once full
	next   int

	lookups uint64 // ID lookups done (tests check the fast path is taken)
}

// recentIDs is how many written IDs idTops remembers past the floors:
// 4,096 IDs (~100 KB) is a fraction of a second of a saturated node's
// messages, more than the publishes in flight that may overtake one.
const recentIDs = 4096

// mayBeTaken reports whether id may already hold a message and must be
// looked up. tx is the FSM's transaction, read once to find the first
// floor.
func (t *idTops) mayBeTaken(tx *badger.Txn, id snowflake.ID) (bool, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.valid {
		hi, err := highestID(tx) // sees the transaction's pending writes too
		if err != nil {
			return true, err
		}
		for i := range t.floor {
			t.floor[i] = hi
		}
		clear(t.recent)
		t.ring, t.next = t.ring[:0], 0
		t.valid = true
	}
	if _, written := t.recent[id]; !written && id > t.floor[id.Machine()] {
		return false, nil
	}
	t.lookups++
	return true, nil
}

// wrote adds id to the window: call it when a message is written.
func (t *idTops) wrote(id snowflake.ID) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, written := t.recent[id]; !t.valid || written || id <= t.floor[id.Machine()] {
		return
	}
	if t.recent == nil {
		t.recent = make(map[snowflake.ID]struct{}, recentIDs)
	}
	if len(t.ring) < recentIDs {
		t.ring = append(t.ring, id)
	} else {
		old := t.ring[t.next]
		delete(t.recent, old)
		if m := old.Machine(); old > t.floor[m] {
			t.floor[m] = old
		}
		t.ring[t.next] = id
		t.next = (t.next + 1) % recentIDs
	}
	t.recent[id] = struct{}{}
}

// purge forgets the floors and the window (a snapshot replaced the state).
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

// highestID is the highest message ID stored: the larger of the top key
// (messages stored since bodies moved to c/) and the last m/ key (the
// older layout, and pointers, whose IDs top holds too).
func highestID(tx *badger.Txn) (snowflake.ID, error) {
	hi, err := lastIndexed(tx, msgPrefix())
	if err != nil {
		return 0, err
	}
	it, err := tx.Get(topKey())
	if errors.Is(err, badger.ErrKeyNotFound) {
		return snowflake.ID(hi), nil
	}
	if err != nil {
		return 0, err
	}
	err = it.Value(func(v []byte) error {
		if len(v) != 8 {
			return fmt.Errorf("%w: top of %d bytes", ErrBadCommand, len(v))
		}
		hi = max(hi, binary.BigEndian.Uint64(v))
		return nil
	})
	return snowflake.ID(hi), err
}

// topKeeper writes the top key: the highest message ID stored, which
// the older layout found as the last m/ key (for the generator's floor
// after a restart, and idTops' first bound). Every message of a
// transaction sets it, and the transaction writes it once; the keeper
// remembers the value pending in the FSM's current transaction, so that
// only the first message of a transaction reads it. It holds on to that
// transaction (a later one cannot be mistaken for it at the same
// address), and runs on the FSM's apply goroutine.
type topKeeper struct {
	tx *badger.Txn
	id snowflake.ID // the top in tx, stored or pending
}

// raise sets the top key to id if id is above it. It runs when the
// message is written: a raise whose transaction is then thrown away
// leaves nothing behind (the next transaction reads the key again).
func (t *topKeeper) raise(tx *badger.Txn, id snowflake.ID) error {
	if t.tx != tx {
		it, err := tx.Get(topKey())
		var cur snowflake.ID
		switch {
		case err == nil:
			if err := it.Value(func(v []byte) error {
				if len(v) == 8 {
					cur = snowflake.ID(binary.BigEndian.Uint64(v))
				}
				return nil
			}); err != nil {
				return err
			}
		case !errors.Is(err, badger.ErrKeyNotFound):
			return err
		}
		t.tx, t.id = tx, cur
	}
	if id <= t.id {
		return nil
	}
	if err := tx.Set(topKey(), be64(uint64(id))); err != nil {
		return err
	}
	t.id = id
	return nil
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
	top    topKeeper

	segments SegmentStore       // where sealed segments go (nil: none); see tier.go
	live     *live              // nil: no live delivery from apply (live.go)
	started  *conversationHooks // told of new direct conversations (conversation.go)
	// erasedIn tells, from the replicated state, whether a user of
	// another region was erased here (regions.go); nil: never.
	erasedIn func(tx *badger.Txn, uid string) (bool, error)
}

func (s *fsmState) purge() {
	s.sums.purge()
	s.ids.purge()
	s.cids.purge()
	s.top = topKeeper{}
}
