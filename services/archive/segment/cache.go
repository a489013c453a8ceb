package segment

import (
	"container/list"
	"sync"
)

// Cache keeps decoded blocks of segments, bounded in bytes, least
// recently used out first. A node reads a sealed page through it, so
// paging back through a conversation fetches and inflates each block
// once. Safe for concurrent use; the messages it hands out are shared
// and must not be modified.
type Cache struct {
	mu    sync.Mutex
	max   int64
	bytes int64
	ll    *list.List // front: most recently used
	items map[blockKey]*list.Element

	hits, misses uint64
}

type blockKey struct {
	object string
	block  int
}

type cached struct {
	key  blockKey
	msgs []Message
	size int64
}

// messageOverhead is what a cached message costs besides its body.
const messageOverhead = 40

// NewCache returns a cache holding up to maxBytes of decoded blocks
// (bodies plus a fixed cost per message); maxBytes ≤ 0 caches nothing.
func NewCache(maxBytes int64) *Cache {
	return &Cache{max: maxBytes, ll: list.New(), items: make(map[blockKey]*list.Element)}
}

// Get returns block of object if cached.
func (c *Cache) Get(object string, block int) ([]Message, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.items[blockKey{object, block}]; ok {
		c.ll.MoveToFront(e)
		c.hits++
		return e.Value.(*cached).msgs, true
	}
	c.misses++
	return nil, false
}

// Add caches block of object, evicting the least recently used blocks
// to stay within the bound; a block larger than the whole bound is not
// kept.
func (c *Cache) Add(object string, block int, msgs []Message) {
	size := int64(0)
	for _, m := range msgs {
		size += int64(len(m.Body)) + messageOverhead
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	k := blockKey{object, block}
	if e, ok := c.items[k]; ok {
		c.ll.MoveToFront(e)
		return
	}
	if size > c.max {
		return
	}
	c.items[k] = c.ll.PushFront(&cached{key: k, msgs: msgs, size: size})
	c.bytes += size
	for c.bytes > c.max {
		e := c.ll.Back()
		v := e.Value.(*cached)
		c.ll.Remove(e)
		delete(c.items, v.key)
		c.bytes -= v.size
	}
}

// Forget drops every cached block of object (a segment rewritten or
// deleted).
func (c *Cache) Forget(object string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, e := range c.items {
		if k.object == object {
			c.bytes -= e.Value.(*cached).size
			c.ll.Remove(e)
			delete(c.items, k)
		}
	}
}

// Stats reports the bytes held, the blocks held, and hits and misses
// since the start.
func (c *Cache) Stats() (bytes int64, blocks int, hits, misses uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bytes, len(c.items), c.hits, c.misses
}
