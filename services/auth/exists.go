package auth

import (
	"errors"
	"fmt"
	"sync"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/internal/wire"
)

// defaultExistsEntries bounds the cache of existing accounts: about
// 64 bytes an entry, so 4 MB at most, which holds every active user of
// an edge node.
const defaultExistsEntries = 64 << 10

// existsCache remembers user IDs known to have an account, so that the
// recipient check of every direct message (UserExists) is a map lookup
// rather than a Badger read and a JSON decode.
//
// It holds only positive answers, and an account that is deleted
// (CmdAccountDelete) is removed from it once the deletion commits, and
// answered "no" from then on by the set of deleted accounts, so an
// entry cannot go stale while this node applies the log; a "no such user" is always read from the database,
// hence it never hides an account that was created. A snapshot restore
// replaces the state: purge drops everything and bumps gen, and a lookup
// that read the database before the restore does not cache what it
// read (add compares gen).
//
// The cache is bounded: at max entries, adding one drops an arbitrary
// other (Go's map order), which costs one more database read later.
type existsCache struct {
	max int

	mu  sync.RWMutex
	gen uint64
	m   map[string]struct{}
}

func newExistsCache(max int) *existsCache {
	return &existsCache{max: max, m: make(map[string]struct{})}
}

// has reports whether uid is cached, and the generation a loader passes
// to add.
func (c *existsCache) has(uid string) (ok bool, gen uint64) {
	c.mu.RLock()
	_, ok = c.m[uid]
	gen = c.gen
	c.mu.RUnlock()
	return ok, gen
}

// add caches uid unless the state was replaced since gen was read.
func (c *existsCache) add(uid string, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen != c.gen {
		return
	}
	if _, ok := c.m[uid]; ok {
		return
	}
	if len(c.m) >= c.max {
		for k := range c.m {
			delete(c.m, k)
			break
		}
	}
	c.m[uid] = struct{}{}
}

// remove forgets uid (its account was deleted).
func (c *existsCache) remove(uid string) {
	c.mu.Lock()
	delete(c.m, uid)
	c.mu.Unlock()
}

// purge drops everything (after a snapshot restore).
func (c *existsCache) purge() {
	c.mu.Lock()
	c.gen++
	clear(c.m)
	c.mu.Unlock()
}

func (c *existsCache) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.m)
}

// UserExists reports whether an account with this user ID exists on this
// node's applied state: from the cache, or else a key lookup (the account
// is not decoded).
func (s *Service) UserExists(uid string) (bool, error) {
	if wire.ValidUserID(uid) != nil || s.gone.has(uid) {
		return false, nil
	}
	ok, gen := s.exists.has(uid)
	if ok {
		return true, nil
	}
	err := s.db.View(func(tx *badger.Txn) error {
		_, err := tx.Get([]byte(prefixAccount + uid))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		ok = err == nil
		return err
	})
	if err != nil {
		return false, fmt.Errorf("auth: read account: %w", err)
	}
	if ok {
		s.exists.add(uid, gen)
	}
	return ok, nil
}
