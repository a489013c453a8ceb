package fsm

import (
	"bytes"
	"slices"

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

// DeleteKeys deletes, as far as the budget goes, keys: the keys under
// prefix that a DeleteMatching(tx, prefix, b, match) would be told yes
// to, found some other way (an index). It deletes the same keys in the
// same (key) order and answers the same done, so that a node that reads
// an index and one that scans the prefix write the same: not done when
// the budget ran out before any key under prefix that follows the last
// one deleted. keys need not be sorted; every one must exist. deleted
// are the keys it deleted, in key order.
func DeleteKeys(tx *badger.Txn, prefix []byte, keys [][]byte, b *Budget) (deleted [][]byte, done bool, err error) {
	keys = slices.Clone(keys)
	slices.SortFunc(keys, bytes.Compare)
	more := false
	if n := max(b.Left, 0); len(keys) >= n {
		keys = keys[:n]
		it := tx.NewIterator(badger.IteratorOptions{Prefix: prefix})
		if n == 0 {
			it.Rewind()
		} else {
			it.Seek(append(bytes.Clone(keys[n-1]), 0))
		}
		more = it.Valid()
		it.Close()
	}
	for _, k := range keys {
		if _, err := b.Delete(tx, k); err != nil {
			return nil, false, err
		}
	}
	return keys, !more, nil
}
