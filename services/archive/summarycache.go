package archive

import (
	"sync"

	"github.com/dgraph-io/badger/v4"
)

// summaryCache keeps the direct conversation summaries (w/{uid}/{peer})
// that the FSM wrote last, so that storing a message does not look up
// both sides' summaries in Badger's levels (15% of a saturated node's
// CPU). It never changes an answer: a key it holds has exactly its
// latest committed value. A handler that writes a summary forgets the
// key at once (the write may be thrown away with its transaction, and a
// later command of the same transaction must read the pending write
// through the transaction); the value goes back in only when the entry
// has committed (applied.AfterCommit). A snapshot restore empties it.
// All of this runs on the FSM's apply goroutine; the mutex is for
// tests that apply from several.
type summaryCache struct {
	mu  sync.Mutex
	m   map[string]summary
	max int // entries; when full it starts over (cheap, and rare)
}

// summaryWrite is a summary a command wrote, for the cache once committed.
type summaryWrite struct {
	key string
	sum summary
}

const defaultSummaryCacheEntries = 1 << 16

func newSummaryCache(max int) *summaryCache {
	return &summaryCache{m: map[string]summary{}, max: max}
}

func (c *summaryCache) get(key []byte) (summary, bool) {
	if c == nil {
		return summary{}, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	s, ok := c.m[string(key)]
	return s, ok
}

// forget drops key before a write to it.
func (c *summaryCache) forget(key []byte) {
	if c == nil {
		return
	}
	c.mu.Lock()
	delete(c.m, string(key))
	c.mu.Unlock()
}

// committed puts what a committed command wrote.
func (c *summaryCache) committed(ws []summaryWrite) {
	if c == nil || len(ws) == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, w := range ws {
		if _, ok := c.m[w.key]; !ok && len(c.m) >= c.max {
			clear(c.m)
		}
		c.m[w.key] = w.sum
	}
}

func (c *summaryCache) purge() {
	if c == nil {
		return
	}
	c.mu.Lock()
	clear(c.m)
	c.mu.Unlock()
}

// keptDirect is keptDirectSummary served from the cache when it can: a
// cached summary is a kept one whose conversation is listed.
func (c *summaryCache) keptDirect(tx *badger.Txn, uid, peer, conv string) (summary, bool, error) {
	if s, ok := c.get(stateKey(uid, peer)); ok {
		return s, true, nil
	}
	return keptDirectSummary(tx, uid, peer, conv)
}
