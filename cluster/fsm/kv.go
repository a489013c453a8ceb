package fsm

import (
	"encoding/json"
	"errors"

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
	var keys [][]byte
	it := tx.NewIterator(badger.IteratorOptions{Prefix: prefix})
	for it.Rewind(); it.Valid(); it.Next() {
		keys = append(keys, it.Item().KeyCopy(nil))
	}
	it.Close()
	for _, k := range keys {
		if err := tx.Delete(k); err != nil {
			return err
		}
	}
	return nil
}
