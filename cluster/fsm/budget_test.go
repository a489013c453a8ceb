package fsm_test

import (
	"fmt"
	"maps"
	"strings"
	"testing"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/cluster/fsm/fsmtest"
)

func TestDeleteMatchingSpendsTheBudgetInKeyOrder(t *testing.T) {
	db := fsmtest.OpenDB(t)
	if err := db.Update(func(tx *badger.Txn) error {
		for i := range 10 {
			if err := tx.Set([]byte(fmt.Sprintf("r/x/%02d", i)), []byte(fmt.Sprint(i%2))); err != nil {
				return err
			}
		}
		return tx.Set([]byte("r/y/00"), []byte("1"))
	}); err != nil {
		t.Fatal(err)
	}
	var asked []string
	odd := func(k, v []byte) (bool, error) { asked = append(asked, string(k)); return string(v) == "1", nil }
	step := func(budget int) (bool, int) {
		b := fsm.NewBudget(budget)
		var done bool
		if err := db.Update(func(tx *badger.Txn) error {
			var err error
			done, err = fsm.DeleteMatching(tx, []byte("r/x/"), b, odd)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return done, budget - b.Left
	}
	if done, spent := step(2); done || spent != 2 {
		t.Fatalf("first step: done %v, spent %d", done, spent)
	}
	// match is asked only while budget is left: r/x/03 was its last key.
	if last := asked[len(asked)-1]; last != "r/x/03" {
		t.Fatalf("asked up to %s", last)
	}
	if done, spent := step(2); done || spent != 2 { // 05 07, then 08 is not judged: perhaps more
		t.Fatalf("second step: done %v, spent %d", done, spent)
	}
	if done, spent := step(3); !done || spent != 1 { // 09, and the prefix ends
		t.Fatalf("third step: done %v, spent %d", done, spent)
	}
	if done, spent := step(3); !done || spent != 0 {
		t.Fatalf("fourth step: done %v, spent %d", done, spent)
	}
	left := fsmtest.Dump(t, db, "r/")
	if len(left) != 6 || left["r/y/00"] != "1" {
		t.Fatalf("left %v", left)
	}
	for k, v := range left {
		if strings.HasPrefix(k, "r/x/") && v != "0" {
			t.Fatalf("%s=%s left", k, v)
		}
	}
	// A spent budget deletes nothing.
	b := fsm.NewBudget(0)
	if err := db.Update(func(tx *badger.Txn) error {
		ok, err := b.Delete(tx, []byte("r/y/00"))
		if ok {
			t.Fatal("deleted with no budget")
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
}

// DeleteKeys, given the keys a match says yes to in any order, deletes
// what DeleteMatching deletes and answers the same done, step by step,
// whatever the budget (negative: overspent by an earlier part).
func TestDeleteKeysDoesWhatDeleteMatchingDoes(t *testing.T) {
	for budget := -1; budget <= 5; budget++ {
		a, b := fsmtest.OpenDB(t), fsmtest.OpenDB(t)
		for pi, pattern := range []string{"yyyyyy", "ynnnny", "nnnnnn", "nyynny", "ynynyn", "nnnnny", "ynnnnn"} {
			prefix := fmt.Sprintf("r/x%d/", pi)
			for _, db := range []*badger.DB{a, b} {
				if err := db.Update(func(tx *badger.Txn) error {
					for i, c := range pattern {
						if err := tx.Set([]byte(fmt.Sprintf("%s%02d", prefix, i)), []byte(string(c))); err != nil {
							return err
						}
					}
					return tx.Set([]byte(fmt.Sprintf("r/x%d/00", pi+1)), []byte("y")) // the next prefix's
				}); err != nil {
					t.Fatal(err)
				}
			}
			for step := 0; step < 20; step++ {
				var doneA, doneB bool
				var leftA, leftB int
				if err := a.Update(func(tx *badger.Txn) error {
					bud := fsm.NewBudget(budget)
					var err error
					doneA, err = fsm.DeleteMatching(tx, []byte(prefix), bud, func(_, v []byte) (bool, error) { return string(v) == "y", nil })
					leftA = bud.Left
					return err
				}); err != nil {
					t.Fatal(err)
				}
				if err := b.Update(func(tx *badger.Txn) error {
					var keys [][]byte
					for i := len(pattern) - 1; i >= 0; i-- { // any order
						k := []byte(fmt.Sprintf("%s%02d", prefix, i))
						if _, err := tx.Get(k); err == nil && pattern[i] == 'y' {
							keys = append(keys, k)
						}
					}
					bud := fsm.NewBudget(budget)
					var err error
					_, doneB, err = fsm.DeleteKeys(tx, []byte(prefix), keys, bud)
					leftB = bud.Left
					return err
				}); err != nil {
					t.Fatal(err)
				}
				if doneA != doneB || leftA != leftB || !maps.Equal(fsmtest.Dump(t, a, "r/"), fsmtest.Dump(t, b, "r/")) {
					t.Fatalf("budget %d, %s, step %d: DeleteMatching done %v left %d, DeleteKeys done %v left %d, or the state differs",
						budget, pattern, step, doneA, leftA, doneB, leftB)
				}
				if doneA || budget <= 0 {
					break
				}
			}
		}
	}
}
