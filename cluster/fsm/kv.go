package fsm

import (
	"bytes"
	"encoding/json"
	"errors"
	"slices"

	"github.com/dgraph-io/badger/v4"
)

// Small helpers for handlers that keep JSON values under their prefix
// (the push and media services), so that each owner does not carry its
// own copy.

// GetJSON decodes the value at key into v; false when the key is absent.
func GetJSON(tx *badger.Txn, key []byte, v any) (bool, error) {
	it, err := tx.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return true, it.Value(func(b []byte) error { return json.Unmarshal(b, v) })
}

// SetJSON stores v encoded as JSON at key.
func SetJSON(tx *badger.Txn, key []byte, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return tx.Set(key, b)
}

// DeletePrefix deletes every key under prefix (keys are collected first:
// a transaction's iterator must not see its own deletes half way).
func DeletePrefix(tx *badger.Txn, prefix []byte) error {
	return DeletePrefixes(tx, [][]byte{prefix})
}

// DeletePrefixes deletes every key under each of prefixes with one
// iterator, bounded by the prefixes' common prefix: give it prefixes of
// one key range (the records of many messages), not of several ranges.
// An iterator of an update transaction sorts all of the transaction's
// pending writes when it is made, so one per prefix made a transaction
// that deletes the records of thousands of messages quadratic (a push
// progress command marking 10,000 messages done took seconds of the
// FSM's apply goroutine). The iterator only moves forward: a seek skips
// the deleted keys up to the next live one, so each is passed once per
// call, not once per prefix.
func DeletePrefixes(tx *badger.Txn, prefixes [][]byte) error {
	if len(prefixes) == 0 {
		return nil
	}
	sorted := slices.SortedFunc(slices.Values(prefixes), bytes.Compare)
	first, last := sorted[0], sorted[len(sorted)-1]
	n := 0
	for n < len(first) && n < len(last) && first[n] == last[n] {
		n++
	}
	var keys [][]byte
	it := tx.NewIterator(badger.IteratorOptions{Prefix: first[:n]})
	it.Seek(first)
	for _, p := range sorted {
		if !it.Valid() {
			break // nothing left in the range
		}
		if bytes.Compare(it.Item().Key(), p) < 0 {
			it.Seek(p)
		}
		for ; it.ValidForPrefix(p); it.Next() {
			keys = append(keys, it.Item().KeyCopy(nil))
		}
	}
	it.Close()
	for _, k := range keys {
		if err := tx.Delete(k); err != nil {
			return err
		}
	}
	return nil
}
