package peerqueue

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"
)

// BadgerCursor is a CursorStore in one key of a Badger database (the
// node's data store), an 8-byte big-endian position.
type BadgerCursor struct {
	db  *badger.DB
	key []byte
}

// NewBadgerCursor keeps a cursor at key in db.
func NewBadgerCursor(db *badger.DB, key []byte) *BadgerCursor {
	return &BadgerCursor{db: db, key: append([]byte(nil), key...)}
}

// Load reads the saved position; ok is false when none was saved.
func (c *BadgerCursor) Load() (pos uint64, ok bool, err error) {
	err = c.db.View(func(txn *badger.Txn) error {
		it, err := txn.Get(c.key)
		if err != nil {
			return err
		}
		return it.Value(func(v []byte) error {
			if len(v) != 8 {
				return fmt.Errorf("cursor %q has %d bytes, want 8", c.key, len(v))
			}
			pos = binary.BigEndian.Uint64(v)
			return nil
		})
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("peerqueue: load cursor: %w", err)
	}
	return pos, true, nil
}

// Save stores pos.
func (c *BadgerCursor) Save(pos uint64) error {
	v := binary.BigEndian.AppendUint64(nil, pos)
	if err := c.db.Update(func(txn *badger.Txn) error { return txn.Set(c.key, v) }); err != nil {
		return fmt.Errorf("peerqueue: save cursor: %w", err)
	}
	return nil
}
