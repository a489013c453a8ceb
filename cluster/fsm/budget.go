package fsm

import (
	"bytes"

	"github.com/dgraph-io/badger/v4"
)

// Budget bounds the writes of one step of a long replicated deletion
// (an erased account's history can hold more keys than one Badger
// transaction takes): a handler spends it key by key and, when it runs
// out, reports "not done" so that its proposer sends the next step.
// Spending is deterministic (keys are visited in key order), so every
// node stops at the same key.
type Budget struct{ Left int }

// NewBudget is a budget of n writes.
func NewBudget(n int) *Budget { return &Budget{Left: n} }

// Spent reports whether nothing is left.
func (b *Budget) Spent() bool { return b.Left <= 0 }

// Delete deletes key, spending one write; false (nothing deleted) when
// the budget is spent.
func (b *Budget) Delete(tx *badger.Txn, key []byte) (bool, error) {
	if b.Left <= 0 {
		return false, nil
	}
	b.Left--
	return true, tx.Delete(key)
}

// Set writes key, spending one write; false (nothing written) when the
// budget is spent.
func (b *Budget) Set(tx *badger.Txn, key, value []byte) (bool, error) {
	if b.Left <= 0 {
		return false, nil
	}
	b.Left--
	return true, tx.Set(key, value)
}

// DeleteMatching deletes the keys under prefix for which match (nil:
// every key) says yes, in key order, as far as the budget goes. match
// is given the key and its value (valid only during the call), and is
// asked only while budget is left, so every key it says yes to is
// deleted (callers may act on its answers). done reports that no
// matching key is left; a step that spent its budget exactly says not
// done, and the next one finds nothing. Keys are collected before they
// are deleted: a transaction's iterator must not see its own deletes
// half way.
func DeleteMatching(tx *badger.Txn, prefix []byte, b *Budget, match func(key, value []byte) (bool, error)) (done bool, err error) {
	var keys [][]byte
	more := false
	opts := badger.IteratorOptions{Prefix: prefix, PrefetchValues: match != nil}
	it := tx.NewIterator(opts)
	for it.Rewind(); it.Valid(); it.Next() {
		item := it.Item()
		if !bytes.HasPrefix(item.Key(), prefix) {
			break
		}
		if len(keys) >= b.Left {
			// Out of budget before this key is judged (so that match
			// is asked only of keys that are deleted): perhaps more.
			more = true
			break
		}
		if match != nil {
			var ok bool
			if err := item.Value(func(v []byte) error {
				var merr error
				ok, merr = match(item.Key(), v)
				return merr
			}); err != nil {
				it.Close()
				return false, err
			}
			if !ok {
				continue
			}
		}
		keys = append(keys, item.KeyCopy(nil))
	}
	it.Close()
	for _, k := range keys {
		if _, err := b.Delete(tx, k); err != nil {
			return false, err
		}
	}
	return !more, nil
}
