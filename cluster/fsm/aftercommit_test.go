package fsm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/hashicorp/raft"
)

type commitProbe struct {
	db   *badger.DB
	seen *[]bool
}

// AfterCommit records whether the handler's write is visible to readers.
func (c commitProbe) AfterCommit() {
	err := c.db.View(func(tx *badger.Txn) error { _, err := tx.Get([]byte("r/probe")); return err })
	*c.seen = append(*c.seen, err == nil)
}

func TestAfterCommitRunsOnceTheWriteIsVisible(t *testing.T) {
	db, err := badger.Open(badger.DefaultOptions(t.TempDir()).WithLogger(nil).WithMemTableSize(16 << 20))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	f := New(db, nil)
	var seen []bool
	f.Register(0x70, func(tx *badger.Txn, _ Position, _ []byte) (any, error) {
		return commitProbe{db, &seen}, tx.Set([]byte("r/probe"), []byte("x"))
	})
	f.Register(0x71, func(*badger.Txn, Position, []byte) (any, error) {
		return commitProbe{db, &seen}, errors.New("refused")
	})
	f.Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: EncodeBatch([]Command{{Type: 0x70}, {Type: 0x71}})})
	if len(seen) != 1 || !seen[0] {
		t.Fatalf("AfterCommit calls %v, want one call that sees the write", seen)
	}
}

// A handler that fills the transaction half way must not leave half of
// its writes behind; the commands before it keep theirs.
func TestTxnTooBigKeepsNoPartialWrites(t *testing.T) {
	db, err := badger.Open(badger.DefaultOptions(t.TempDir()).WithLogger(nil).WithMemTableSize(16 << 20))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	f := New(db, nil)
	small := func(tx *badger.Txn, at Position, p []byte) (any, error) {
		return nil, tx.Set([]byte("r/small/"+string(p)), p)
	}
	// huge writes keys until badger says the txn is full, unless the
	// transaction is fresh enough to hold them all (n keys).
	huge := func(tx *badger.Txn, at Position, p []byte) (any, error) {
		val := make([]byte, 1024)
		for i := 0; i < 1500; i++ {
			if err := tx.Set([]byte(fmt.Sprintf("r/huge/%05d", i)), val); err != nil {
				return nil, err
			}
		}
		return nil, nil
	}
	f.Register(0x72, small)
	f.Register(0x73, huge)
	cmds := []Command{{Type: 0x72, Payload: []byte("a")}}
	for i := 0; i < 3; i++ {
		cmds = append(cmds, Command{Type: 0x73})
	}
	cmds = append(cmds, Command{Type: 0x72, Payload: []byte("b")})
	res := f.Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: EncodeBatch(cmds)}).([]Result)
	for i, r := range res {
		if r.Err != nil {
			t.Fatalf("command %d: %v", i, r.Err)
		}
	}
	count := func(prefix string) int {
		n := 0
		_ = db.View(func(tx *badger.Txn) error {
			opts := badger.DefaultIteratorOptions
			opts.Prefix = []byte(prefix)
			it := tx.NewIterator(opts)
			defer it.Close()
			for it.Rewind(); it.Valid(); it.Next() {
				n++
			}
			return nil
		})
		return n
	}
	if count("r/small/") != 2 || count("r/huge/") != 1500 {
		t.Fatalf("small %d huge %d", count("r/small/"), count("r/huge/"))
	}
	if idx, _ := f.AppliedIndex(); idx != 1 {
		t.Fatalf("applied %d", idx)
	}
}

// HoldApply keeps entries from being applied before every owner has
// registered its handlers (a restarted follower gets the commit index at
// once); released, the entry applies with the handler in place.
func TestHoldApplyWaitsForHandlers(t *testing.T) {
	db, err := badger.Open(badger.DefaultOptions(t.TempDir()).WithLogger(nil).WithMemTableSize(16 << 20))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	f := New(db, nil)
	release := f.HoldApply()
	done := make(chan []Result, 1)
	go func() {
		done <- f.Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: EncodeBatch([]Command{{Type: 0x74}})}).([]Result)
	}()
	select {
	case <-done:
		t.Fatal("Apply ran while held")
	case <-time.After(50 * time.Millisecond): // asserting absence needs a window
	}
	f.Register(0x74, func(*badger.Txn, Position, []byte) (any, error) { return "handled", nil })
	release()
	res := <-done
	if res[0].Err != nil || res[0].Value != "handled" {
		t.Fatalf("after release: %+v", res)
	}
}

// HoldApplyFrom lets entries without the command type through and holds
// the first entry with it and every entry after it, in order, until the
// release (tests hold a message's apply without also holding the node's
// own background proposals made just before it).
func TestHoldApplyFromHoldsFromTheFirstEntryOfTheType(t *testing.T) {
	db, err := badger.Open(badger.DefaultOptions(t.TempDir()).WithLogger(nil).WithMemTableSize(16 << 20))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	f := New(db, nil)
	f.Register(0x74, func(*badger.Txn, Position, []byte) (any, error) { return "other", nil })
	f.Register(0x75, func(*badger.Txn, Position, []byte) (any, error) { return "held", nil })
	release := f.HoldApplyFrom(0x75)
	entry := func(i uint64, types ...byte) *raft.Log {
		cmds := make([]Command, len(types))
		for k, t := range types {
			cmds[k] = Command{Type: t}
		}
		return &raft.Log{Index: i, Type: raft.LogCommand, Data: EncodeBatch(cmds)}
	}
	if res := f.Apply(entry(1, 0x74)).([]Result); res[0].Value != "other" {
		t.Fatalf("an entry without the type: %+v", res)
	}
	done := make(chan []Result, 2)
	go func() {
		done <- f.Apply(entry(2, 0x74, 0x75)).([]Result)
		done <- f.Apply(entry(3, 0x74)).([]Result)
	}()
	select {
	case res := <-done:
		t.Fatalf("the entry with the type applied while held: %+v", res)
	case <-time.After(50 * time.Millisecond): // asserting absence needs a window
	}
	release()
	if res := <-done; len(res) != 2 || res[1].Value != "held" {
		t.Fatalf("after release: %+v", res)
	}
	if res := <-done; res[0].Value != "other" {
		t.Fatalf("the entry after it: %+v", res)
	}
	if idx, _ := f.AppliedIndex(); idx != 3 {
		t.Fatalf("applied %d, want 3", idx)
	}
}

// An entry that overflows one Badger transaction commits the commands
// before the overflow on their own. If the node dies before the entry's
// last transaction (which moves the applied index) commits, Raft applies
// the entry again at the next start: the commands already committed must
// not be applied a second time (a counter would count twice).
func TestTxnTooBigReplayAfterACrashAppliesNothingTwice(t *testing.T) {
	db, err := badger.Open(badger.DefaultOptions(t.TempDir()).WithLogger(nil).WithMemTableSize(16 << 20))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	f := New(db, nil)
	counter := []byte("r/count")
	count := func() int {
		n := 0
		_ = db.View(func(tx *badger.Txn) error {
			it, err := tx.Get(counter)
			if err != nil {
				return err
			}
			v, err := it.ValueCopy(nil)
			n = int(v[0])
			return err
		})
		return n
	}
	f.Register(0x74, func(tx *badger.Txn, at Position, p []byte) (any, error) {
		n := 0
		if it, err := tx.Get(counter); err == nil {
			v, _ := it.ValueCopy(nil)
			n = int(v[0])
		}
		return nil, tx.Set(counter, []byte{byte(n + 1)})
	})
	f.Register(0x73, func(tx *badger.Txn, at Position, p []byte) (any, error) {
		val := make([]byte, 1024)
		for i := 0; i < 1500; i++ {
			if err := tx.Set([]byte(fmt.Sprintf("r/huge/%05d", i)), val); err != nil {
				return nil, err
			}
		}
		return nil, nil
	})
	crash := true
	f.Register(0x75, func(tx *badger.Txn, at Position, p []byte) (any, error) {
		if crash {
			panic("the process dies here")
		}
		return nil, tx.Set([]byte("r/last"), []byte("x"))
	})
	e := &raft.Log{Index: 1, Type: raft.LogCommand, Data: EncodeBatch([]Command{{Type: 0x74}, {Type: 0x73}, {Type: 0x73}, {Type: 0x75}})}
	func() {
		defer func() { _ = recover() }()
		f.Apply(e)
	}()
	if idx, _ := f.AppliedIndex(); idx != 0 {
		t.Fatalf("applied index %d after the crash", idx)
	}
	if got := count(); got != 1 {
		t.Fatalf("counter %d after the crash: the first transaction did not commit alone (the test needs it)", got)
	}
	crash = false
	res := f.Apply(e).([]Result) // Raft replays the entry at the next start
	if res[3].Err != nil {
		t.Fatalf("replay: %+v", res)
	}
	if got := count(); got != 1 {
		t.Fatalf("counter %d after the replay: a command was applied twice", got)
	}
	if idx, _ := f.AppliedIndex(); idx != 1 {
		t.Fatalf("applied %d", idx)
	}
	if err := db.View(func(tx *badger.Txn) error { _, err := tx.Get(partialKey); return err }); !errors.Is(err, badger.ErrKeyNotFound) {
		t.Fatalf("the entry's mark of a partial apply is left: %v", err)
	}
	// The next entry applies all of its commands.
	if res := f.Apply(&raft.Log{Index: 2, Type: raft.LogCommand, Data: EncodeBatch([]Command{{Type: 0x74}})}).([]Result); res[0].Err != nil {
		t.Fatal(res[0].Err)
	}
	if got := count(); got != 2 {
		t.Fatalf("counter %d after the next entry", got)
	}
}

// An entry whose commands fill a transaction to its last places leaves
// no room for the entry's own keys (partialKey, appliedKey): the FSM
// commits fewer commands first instead of stopping the node. For every
// fill near the limit, the entry is applied whole, once.
func TestEntryFillingTheTransactionToTheLastPlace(t *testing.T) {
	open := func(t *testing.T) *badger.DB {
		db, err := badger.Open(badger.DefaultOptions(t.TempDir()).WithLogger(nil).
			WithMemTableSize(4 << 20).WithValueThreshold(1 << 10))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return db
	}
	// How many of the fill's keys one transaction takes.
	capacity := 0
	{
		tx := open(t).NewTransaction(true)
		for tx.Set(fmt.Appendf(nil, "r/fill/a/%06d", capacity), nil) == nil {
			capacity++
		}
		tx.Discard()
	}
	for _, tail := range []int{0, 1, 5} {
		for n := capacity - 3; n <= capacity; n++ {
			t.Run(fmt.Sprintf("fill=%d,then=%d", n, tail), func(t *testing.T) {
				db := open(t)
				f := New(db, nil)
				// 0x76 writes as many keys as its payload says, under its
				// own prefix (the payload's first byte).
				f.Register(0x76, func(tx *badger.Txn, at Position, p []byte) (any, error) {
					k := int(binary.BigEndian.Uint32(p[1:]))
					for i := range k {
						if err := tx.Set(fmt.Appendf(nil, "r/fill/%c/%06d", p[0], i), nil); err != nil {
							return nil, err
						}
					}
					return k, nil
				})
				fill := func(prefix byte, k int) Command {
					return Command{Type: 0x76, Payload: binary.BigEndian.AppendUint32([]byte{prefix}, uint32(k))}
				}
				cmds := []Command{fill('a', n)}
				if tail > 0 {
					cmds = append(cmds, fill('b', tail))
				}
				res := f.Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: EncodeBatch(cmds)}).([]Result)
				for i, r := range res {
					if r.Err != nil {
						t.Fatalf("command %d: %v", i, r.Err)
					}
				}
				if idx, _ := f.AppliedIndex(); idx != 1 {
					t.Fatalf("applied index %d, want 1", idx)
				}
				keys := 0
				_ = db.View(func(tx *badger.Txn) error {
					it := tx.NewIterator(badger.IteratorOptions{Prefix: []byte("r/fill/")})
					defer it.Close()
					for it.Rewind(); it.Valid(); it.Next() {
						keys++
					}
					return nil
				})
				if keys != n+tail {
					t.Fatalf("%d keys written, want %d", keys, n+tail)
				}
			})
		}
	}
}

// A snapshot the leader sends while the node still builds its owners
// (Raft runs, the FSM is held) waits like an entry: restored at once, it
// replaced the state under an owner that had loaded its in-memory copy
// from the state before and registered its OnRestore only after the
// restore ran, so that copy stayed the replaced state's (a deleted
// account's tokens taken, a device holder missing) until a restart.
func TestARestoreWaitsForTheOwnersOnceRaftIsBuilt(t *testing.T) {
	leader, _ := newFSM(t)
	leader.Apply(entry(5, put("k", "v")))
	snap := snapshotOf(t, leader)

	f, _ := newFSM(t)
	release := f.HoldApply()
	f.GateRestores() // Raft is built
	done := make(chan error, 1)
	go func() { done <- f.Restore(io.NopCloser(bytes.NewReader(snap))) }()
	select {
	case err := <-done:
		t.Errorf("the snapshot was restored while the FSM was held (%v)", err)
		done <- err
	case <-time.After(100 * time.Millisecond): // asserting absence needs a window
	}
	// The owner loads its copy and registers, as owners do while held.
	loaded := dump(t, f.DB(), "r/t/")
	f.OnRestore(func() { loaded = dump(t, f.DB(), "r/t/") })
	release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if loaded["r/t/k"] != "v" {
		t.Fatalf("the owner's copy after the restore: %v, want the snapshot's r/t/k=v", loaded)
	}
}
