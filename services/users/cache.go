package users

import (
	"container/list"
	"errors"
	"iter"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Names of the in-process caches (the "cache" label of
// edgechat_cache_requests_total).
const (
	cacheProfiles   = "user_profiles"
	cacheContacts   = "user_contacts"
	cacheBlocks     = "user_blocks"
	cacheGroups     = "group_meta"
	cacheMembers    = "group_members"
	cacheUserGroups = "user_groups"
)

// cacheCounter counts cache lookups by cache and result; the gateway's and
// the services' caches share the metric so one query graphs every hit ratio.
func cacheCounter(reg prometheus.Registerer) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "edgechat_cache_requests_total",
		Help: "In-process cache lookups by cache and result (hit or miss).",
	}, []string{"cache", "result"})
	if reg == nil {
		return c
	}
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(*prometheus.CounterVec); ok {
				return existing
			}
		}
	}
	return c
}

// lru is a size-capped, least-recently-used cache of values by string key.
//
// Invalidation races with loading: a reader may read the database just
// before a commit and store the old value just after the commit's
// invalidation. Every invalidation bumps gen; a loader notes gen before
// reading and add drops its value when gen moved meanwhile, so a stale
// value is never cached (at the price of an occasional extra miss).
type lru[V any] struct {
	max          int
	hits, misses prometheus.Counter

	mu  sync.Mutex
	gen uint64
	ll  *list.List // front = most recently used; values are *lruEntry[V]
	m   map[string]*list.Element
}

type lruEntry[V any] struct {
	key string
	val V
}

func newLRU[V any](name string, max int, counter *prometheus.CounterVec) *lru[V] {
	if max < 1 {
		max = 1
	}
	return &lru[V]{
		max:    max,
		hits:   counter.WithLabelValues(name, "hit"),
		misses: counter.WithLabelValues(name, "miss"),
		ll:     list.New(),
		m:      make(map[string]*list.Element),
	}
}

// get returns the cached value and the generation a loader must pass to add.
func (c *lru[V]) get(key string) (v V, gen uint64, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, found := c.m[key]; found {
		c.ll.MoveToFront(el)
		c.hits.Inc()
		return el.Value.(*lruEntry[V]).val, c.gen, true
	}
	c.misses.Inc()
	return v, c.gen, false
}

// add caches v unless an invalidation happened since gen was read.
func (c *lru[V]) add(key string, v V, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen != c.gen {
		return
	}
	if el, found := c.m[key]; found {
		el.Value.(*lruEntry[V]).val = v
		c.ll.MoveToFront(el)
		return
	}
	c.m[key] = c.ll.PushFront(&lruEntry[V]{key: key, val: v})
	for c.ll.Len() > c.max {
		last := c.ll.Back()
		c.ll.Remove(last)
		delete(c.m, last.Value.(*lruEntry[V]).key)
	}
}

// remove drops keys and fences off loads that started before.
func (c *lru[V]) remove(keys ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	for _, k := range keys {
		if el, found := c.m[k]; found {
			c.ll.Remove(el)
			delete(c.m, k)
		}
	}
}

// purge drops everything (after a snapshot restore).
func (c *lru[V]) purge() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	c.ll.Init()
	clear(c.m)
}

// cached returns key's value from c, loading and caching it on a miss.
func cached[V any](c *lru[V], key string, load func() (V, error)) (V, error) {
	v, gen, ok := c.get(key)
	if ok {
		return v, nil
	}
	v, err := load()
	if err != nil {
		return v, err
	}
	c.add(key, v, gen)
	return v, nil
}

// caches are the service's read caches, all invalidated after commit.
type caches struct {
	profiles   *lru[Profile]
	contacts   *lru[map[string]struct{}] // owner → contact set
	blocks     *lru[map[string]struct{}] // blocker → blocked set
	groups     *lru[groupEntry]          // gid → metadata (or absent)
	members    *lru[*memberSet]          // gid → every member's role
	userGroups *lru[map[string]Role]     // uid → gid → role
}

func newCaches(size int, counter *prometheus.CounterVec) *caches {
	// Member sets can hold 10,000 entries each: keep fewer of them.
	groupSets := max(size/16, 64)
	return &caches{
		profiles:   newLRU[Profile](cacheProfiles, size, counter),
		contacts:   newLRU[map[string]struct{}](cacheContacts, size, counter),
		blocks:     newLRU[map[string]struct{}](cacheBlocks, size, counter),
		groups:     newLRU[groupEntry](cacheGroups, size, counter),
		members:    newLRU[*memberSet](cacheMembers, groupSets, counter),
		userGroups: newLRU[map[string]Role](cacheUserGroups, size, counter),
	}
}

func (c *caches) purge() {
	c.profiles.purge()
	c.contacts.purge()
	c.blocks.purge()
	c.groups.purge()
	c.members.purge()
	c.userGroups.purge()
}

// invalidation lists what a committed command changed.
type invalidation struct {
	profiles   []string
	contacts   []string
	blocks     []string
	groups     []string // metadata and member sets
	userGroups []string
	removed    []memberRef // members who left or were removed
	added      []memberRef // members who joined (created with, added, a mirror's new ones)
	hooks      []func()    // the GroupHook's after-commit functions
}

type memberRef struct{ gid, uid string }

// applied is the value FSM handlers return: the command's result plus
// what to invalidate once the entry is committed (fsm.AfterCommitter).
// AfterCommit runs on every node, so caches and OnMemberRemoved listeners
// are right everywhere, not only where the command was proposed.
type applied struct {
	s     *Service
	value any
	inv   invalidation
	after func() // the GroupHook's, or nil
}

func (a *applied) AfterCommit() {
	if a.after != nil {
		defer a.after()
	}
	for _, h := range a.inv.hooks {
		defer h()
	}
	c := a.s.cache
	if len(a.inv.profiles) > 0 {
		c.profiles.remove(a.inv.profiles...)
	}
	if len(a.inv.contacts) > 0 {
		c.contacts.remove(a.inv.contacts...)
	}
	if len(a.inv.blocks) > 0 {
		c.blocks.remove(a.inv.blocks...)
	}
	if len(a.inv.groups) > 0 {
		c.groups.remove(a.inv.groups...)
		c.members.remove(a.inv.groups...)
	}
	if len(a.inv.userGroups) > 0 {
		c.userGroups.remove(a.inv.userGroups...)
	}
	if len(a.inv.removed) > 0 {
		a.s.mu.RLock()
		fns := a.s.onRemoved
		a.s.mu.RUnlock()
		for _, r := range a.inv.removed {
			for _, fn := range fns {
				fn(r.gid, r.uid)
			}
		}
	}
	if len(a.inv.added) > 0 {
		a.s.mu.RLock()
		fns := a.s.onAdded
		a.s.mu.RUnlock()
		for gid, uids := range byGroup(a.inv.added) {
			for _, fn := range fns {
				fn(gid, uids)
			}
		}
	}
}

// byGroup groups refs by group, in the order the groups come (a command
// changes one group).
func byGroup(refs []memberRef) iter.Seq2[string, []string] {
	return func(yield func(string, []string) bool) {
		for len(refs) > 0 {
			gid, n := refs[0].gid, 1
			for n < len(refs) && refs[n].gid == gid {
				n++
			}
			uids := make([]string, n)
			for i, r := range refs[:n] {
				uids[i] = r.uid
			}
			if !yield(gid, uids) {
				return
			}
			refs = refs[n:]
		}
	}
}

// unwrap returns the handler value behind a Propose result (nil when the
// value did not travel back, as with a forwarded proposal).
func unwrap(v any) any {
	if a, ok := v.(*applied); ok {
		return a.value
	}
	return v
}
