package push

import (
	"sync"
)

// devicesCacheSize bounds the users each userCache keeps (a few hundred
// bytes each: a user's registrations, or mutes and settings).
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
// and everything after a snapshot restore.
type deviceCache = userCache[[]Device]

// prefsCache keeps users' mutes and settings as the push sender's
// decisions read them (prefs.go), dropped per user after the commit of
// every command that writes them (a mute or unmute, a settings change,
// the account's erasure) and everything after a snapshot restore.
type prefsCache = userCache[userPrefs]

// userCache is a bounded per-user cache of values read from the
// database, exact after every commit that changes them: the owner drops
// a user's entry once such a commit is visible.
//
// Invalidation races with loading: a reader may read the database just
// before a commit and store what it read just after the commit's
// invalidation. Every invalidation bumps gen; a loader notes gen before
// it reads and put drops its value when gen moved meanwhile (as
// services/users' caches do), so a value older than the last commit is
// never cached. Values are shared: callers must not change them (they
// copy what they hand out).
type userCache[V any] struct {
	mu  sync.Mutex
	gen uint64
	m   map[string]V
}

// get is uid's cached value and the generation a loader passes to put.
func (c *userCache[V]) get(uid string) (v V, gen uint64, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok = c.m[uid]
	return v, c.gen, ok
}

// put caches uid's value, read after gen was, unless an invalidation
// came meanwhile. v is kept as it is: the caller hands over a copy.
func (c *userCache[V]) put(uid string, v V, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen != c.gen {
		return
	}
	if c.m == nil {
		c.m = map[string]V{}
	}
	if _, ok := c.m[uid]; !ok && len(c.m) >= devicesCacheSize {
		for k := range c.m { // any one: a miss costs one read
			delete(c.m, k)
			break
		}
	}
	c.m[uid] = v
}

// drop forgets uids' values and fences off loads that started before.
func (c *userCache[V]) drop(uids ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	for _, uid := range uids {
		delete(c.m, uid)
	}
}

// purge forgets everything (after a snapshot restore).
func (c *userCache[V]) purge() {
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
