package push

import (
	"fmt"
	"strings"
	"sync"

	"github.com/dgraph-io/badger/v4"
)

// deviceHolders is the set of users who may have a registered device: a
// superset of those who have one in the committed state. Staging asks it
// first, on every direct message, so that a message to a user who never
// registered a device (most users of most deployments) costs a map
// lookup instead of a Badger iterator over the committed state; only a
// user in the set gets the exact check. A user enters the set when a
// device of theirs is written (before the transaction commits, so the
// set never misses one) and leaves it only when the set is rebuilt from
// the database (at start and after a snapshot restore).
type deviceHolders struct {
	mu sync.RWMutex
	m  map[string]struct{}
}

func (h *deviceHolders) mayHave(uid string) bool {
	h.mu.RLock()
	defer h.mu.RUnlock()
	_, ok := h.m[uid]
	return ok
}

func (h *deviceHolders) add(uid string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.m == nil {
		h.m = map[string]struct{}{}
	}
	h.m[uid] = struct{}{}
}

// load rebuilds the set from the device keys in db (a key-only scan).
func (h *deviceHolders) load(db *badger.DB) error {
	m := map[string]struct{}{}
	err := db.View(func(tx *badger.Txn) error {
		it := tx.NewIterator(badger.IteratorOptions{Prefix: []byte(prefixDevice)})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			uid, _, ok := strings.Cut(string(it.Item().Key()[len(prefixDevice):]), "/")
			if ok {
				m[uid] = struct{}{}
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("push: loading device holders: %w", err)
	}
	h.mu.Lock()
	h.m = m
	h.mu.Unlock()
	return nil
}
