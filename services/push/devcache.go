package push

import (
	"slices"
	"sync"
)

// devicesCacheSize bounds the users whose registrations deviceCache
// keeps (a few hundred bytes each).
const devicesCacheSize = 16_384

// deviceCache keeps users' registrations as Devices read them, decoded:
// the push sender reads a user's registrations when it plans a message
// (at the commit) and again when it decides it (after the grace), and
// each read was a Badger iterator and a JSON decode per device (5% of a
// node's CPU at 1,000 messages/s to users with a device), where
// registrations change rarely.
//
// A user's entry is dropped after the commit of every command that
// writes one of their device keys (the put, also of the user the token
// moved from; the delete; the account's erasure: fsm.AfterCommitter),
// and everything after a snapshot restore. Invalidation races with
// loading: a reader may read the database just before a commit and
// store what it read just after the commit's invalidation. Every
// invalidation bumps gen; a loader notes gen before it reads and put
// drops its value when gen moved meanwhile (as services/users' caches
// do), so a value older than the last commit is never cached.
type deviceCache struct {
	mu  sync.Mutex
	gen uint64
	m   map[string][]Device
}

// get is uid's cached registrations (a copy) and the generation a loader
// passes to put.
func (c *deviceCache) get(uid string) (ds []Device, gen uint64, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ds, ok = c.m[uid]
	return slices.Clone(ds), c.gen, ok
}

// put caches uid's registrations, read after gen was, unless an
// invalidation came meanwhile.
func (c *deviceCache) put(uid string, ds []Device, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen != c.gen {
		return
	}
	if c.m == nil {
		c.m = map[string][]Device{}
	}
	if _, ok := c.m[uid]; !ok && len(c.m) >= devicesCacheSize {
		for k := range c.m { // any one: a miss costs one read
			delete(c.m, k)
			break
		}
	}
	c.m[uid] = slices.Clone(ds)
}

// drop forgets uids' registrations and fences off loads that started
// before.
func (c *deviceCache) drop(uids ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	for _, uid := range uids {
		delete(c.m, uid)
	}
}

// purge forgets everything (after a snapshot restore).
func (c *deviceCache) purge() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	clear(c.m)
}

// devicesChanged is a device command's result: the value the proposer
// gets, and the users whose registrations it changed, dropped from the
// cache once the entry is committed.
type devicesChanged struct {
	c    *deviceCache
	uids []string
}

func (d devicesChanged) AfterCommit() { d.c.drop(d.uids...) }
