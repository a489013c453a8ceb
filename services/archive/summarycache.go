package archive

import (
	"sync"

	"github.com/dgraph-io/badger/v4"
)

// summaryCache keeps the direct conversation summaries (x/{convKey},
// both sides) that the FSM wrote last, so that storing a message does
// not look the summary up in Badger's levels (15% of a saturated node's
// CPU when each side had its key). It never changes an answer: a key it holds has exactly its
// latest committed value. A handler that writes a summary forgets the
// key at once (the write may be thrown away with its transaction, and a
// later command of the same transaction must read the pending write
// through the transaction); the value goes back in only when the entry
// has committed (applied.AfterCommit). A snapshot restore empties it.
// All of this runs on the FSM's apply goroutine; the mutex is for
// tests that apply from several.
type summaryCache struct {
	mu  sync.Mutex
	m   map[string]pair // by convKey
	max int             // entries; when full it starts over (cheap, and rare)
}

// pairWrite is a summary a command wrote, for the cache once committed.
type pairWrite struct {
	conv string
	p    pair
}

const defaultSummaryCacheEntries = 1 << 16

func newSummaryCache(max int) *summaryCache {
	return &summaryCache{m: map[string]pair{}, max: max}
}

func (c *summaryCache) get(conv string) (pair, bool) {
	if c == nil {
		return pair{}, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.m[conv]
	return p, ok
}

// forget drops conv's summary before a write to it.
func (c *summaryCache) forget(conv string) {
	if c == nil {
		return
	}
	c.mu.Lock()
	delete(c.m, conv)
	c.mu.Unlock()
}

// committed puts what a committed command wrote.
func (c *summaryCache) committed(w pairWrite) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[w.conv]; !ok && len(c.m) >= c.max {
		clear(c.m)
	}
	c.m[w.conv] = w.p
}

func (c *summaryCache) purge() {
	if c == nil {
		return
	}
	c.mu.Lock()
	clear(c.m)
	c.mu.Unlock()
}

// keptPair is keptPair served from the cache when it can: a cached
// summary is an x/ that exists.
func (c *summaryCache) keptPair(tx *badger.Txn, a, b, conv string) (p pair, found bool, listed [2]bool, err error) {
	if p, ok := c.get(conv); ok {
		return p, true, [2]bool{true, true}, nil
	}
	return keptPair(tx, a, b, conv)
}
