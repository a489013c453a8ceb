package fsm

import (
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// An index is marked complete only by the last step of a walk whose
// first step this node applied: not by a walk without a time (an earlier
// version's), not by the end of a walk begun elsewhere, and a later walk
// changes nothing once it is complete.
func TestIndexMarksCompleteOnlyAfterAWholeWalk(t *testing.T) {
	db := openDB(t)
	m := IndexMarks{Walk: []byte("r/t/walk"), Done: []byte("r/t/done")}
	t1 := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	t2 := t1.Add(time.Hour)
	step := func(fn func(tx *badger.Txn) error) {
		t.Helper()
		if err := db.Update(fn); err != nil {
			t.Fatal(err)
		}
	}
	complete := func() bool {
		t.Helper()
		var ok bool
		if err := db.View(func(tx *badger.Txn) (err error) { ok, err = m.Complete(tx); return err }); err != nil {
			t.Fatal(err)
		}
		return ok
	}
	step(func(tx *badger.Txn) error { return m.Begin(tx, time.Time{}) })
	step(func(tx *badger.Txn) error { return m.End(tx, time.Time{}) })
	if complete() {
		t.Fatal("a walk without its time marked the index")
	}
	step(func(tx *badger.Txn) error { return m.Begin(tx, t1) })
	step(func(tx *badger.Txn) error { return m.End(tx, t2) })
	if complete() {
		t.Fatal("the end of a walk this node did not begin marked the index")
	}
	step(func(tx *badger.Txn) error { return m.Begin(tx, t2) })
	step(func(tx *badger.Txn) error { return m.End(tx, t2) })
	if !complete() {
		t.Fatal("a whole walk did not mark the index")
	}
	var done time.Time
	step(func(tx *badger.Txn) error { _, err := GetJSON(tx, m.Done, &done); return err })
	if !done.Equal(t2) {
		t.Fatalf("marked by the walk of %v, want %v", done, t2)
	}
}
