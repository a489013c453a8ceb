package archive

import (
	"hash/maphash"
	"sync"

	"github.com/dgraph-io/badger/v4"
)

// cidFilter spares the message handler the dedupe lookup of a new
// (sender, cid): a Bloom filter over every dedup/ key, so that a key it
// says is absent is absent and needs no Get (the miss walked the
// memtables and every level's bloom filter on every message). Its
// answer "maybe" is a lookup, as before, so it never changes a result:
// it must only never miss a stored key, which is kept so:
//
//   - A build starts where no handler has uncommitted writes: when the
//     service is created (before any entry is applied), after a restore,
//     and after an entry committed (for a bigger filter). It walks
//     dedup/ twice, to count the keys and size the filter, then to fill
//     it, in chunks read after commits (afterCommit), each from a read
//     transaction opened there. Dedupe keys are deleted only by an
//     account's erasure (erase.go) and by retention (retentionrefs.go):
//     a deleted key the filter still holds is a false positive. They are
//     replaced wholesale by a restore, which starts over; so every key committed before the fill walk started
//     and still stored is there when the walk passes its place, and the keys the handler adds during the
//     fill walk go to the new filter directly. The work runs on the
//     FSM's goroutine (no goroutine outlives the database) and follows
//     the message rate, and no read transaction stays open between
//     entries (an open one would hold Badger's conflict-detection
//     records of every later commit). Until the first build completes
//     every check is a lookup.
//   - The handler adds its key before writing it, so a write thrown away
//     with its transaction (ErrTxnTooBig, then redone) only leaves a
//     false positive.
//   - A snapshot restore drops the filter and any build and starts anew.
//
// The filter is sized for twice the keys found (at least
// minCIDFilterKeys) at ~10 bits a key (1% false positives; 1.25 bytes of
// memory per stored message). When the keys added outgrow it, a build
// of one four times as large starts; the full one answers meanwhile
// (more false positives, never a miss).
type cidFilter struct {
	db   *badger.DB
	min  uint64 // smallest capacity, in keys
	seed maphash.Seed

	mu  sync.Mutex
	cur *bloom       // nil: no complete filter, every check is a lookup
	b   *filterBuild // the build in progress, if any

	lookups uint64 // checks answered "maybe" (tests check the fast path)
	chunk   int    // keys per chunk (chunkKeys; tests make it small)
}

// filterBuild is a build in progress: it counts the keys, then fills
// next, from pos on.
type filterBuild struct {
	pos  []byte // the next key to read; nil: the walk starts
	want uint64 // capacity asked for (growth)
	n    uint64 // keys counted
	next *bloom // nil while counting
	msgs int    // committed messages since the last chunk
}

const (
	minCIDFilterKeys = 1 << 18
	// A build reads chunkKeys keys after every chunkEvery committed
	// messages: about 1 µs per message on average (what the lookup it
	// saves costs), ~0.4 ms per chunk, and a store of N messages is
	// walked twice in 2N/(chunkKeys/chunkEvery) messages.
	chunkKeys  = 4096
	chunkEvery = 16
)

func newCIDFilter(db *badger.DB, minKeys uint64) *cidFilter {
	f := &cidFilter{db: db, min: minKeys, seed: maphash.MakeSeed(), chunk: chunkKeys}
	f.start(0)
	return f
}

// mayContain reports whether key may be stored and must be looked up.
func (f *cidFilter) mayContain(key []byte) bool {
	h := maphash.Bytes(f.seed, key)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cur == nil || f.cur.has(h) {
		f.lookups++
		return true
	}
	return false
}

// add records key, about to be written.
func (f *cidFilter) add(key []byte) {
	h := maphash.Bytes(f.seed, key)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cur != nil {
		f.cur.add(h)
	}
	if f.b != nil && f.b.next != nil {
		f.b.next.add(h) // the fill walk may have passed its place
	}
}

// afterCommit runs after an entry's transaction committed (no handler
// has writes pending): it starts a bigger filter's build when the
// current one is full, and reads a build's next chunk.
func (f *cidFilter) afterCommit() {
	if f == nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.b == nil && f.cur != nil && f.cur.n > f.cur.capacity {
		f.startLocked(4 * f.cur.n)
	}
	if f.b == nil {
		return
	}
	if f.b.msgs++; f.b.msgs >= chunkEvery {
		f.b.msgs = 0
		f.chunkLocked(f.chunk)
	}
}

// purge drops the filter and any build (a snapshot replaced the state)
// and starts a build from the new state.
func (f *cidFilter) purge() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cur = nil
	f.startLocked(0)
}

func (f *cidFilter) start(want uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.startLocked(want)
}

// startLocked starts a build (replacing one in progress): call it only
// where no handler has uncommitted writes.
func (f *cidFilter) startLocked(want uint64) {
	f.b = &filterBuild{want: want}
}

// chunkLocked reads up to n keys of the build from a fresh read
// transaction.
func (f *cidFilter) chunkLocked(n int) {
	b := f.b
	prefix := dedupPrefix()
	tx := f.db.NewTransaction(false)
	defer tx.Discard()
	it := tx.NewIterator(badger.IteratorOptions{Prefix: prefix}) // keys only
	defer it.Close()
	from := b.pos
	if from == nil {
		from = prefix
	}
	it.Seek(from)
	for ; n > 0 && it.ValidForPrefix(prefix); n-- {
		if b.next == nil {
			b.n++
		} else {
			b.next.add(maphash.Bytes(f.seed, it.Item().Key()))
		}
		it.Next()
	}
	if it.ValidForPrefix(prefix) {
		b.pos = it.Item().KeyCopy(nil)
		return
	}
	b.pos = nil
	if b.next == nil {
		// Counted: size the filter and walk again to fill it. Keys added
		// while counting are committed by now: the walk reads them.
		b.next = newBloom(max(f.min, b.want, 2*b.n))
		return
	}
	f.cur, f.b = b.next, nil
}

func (f *cidFilter) lookupCount() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lookups
}

// finish completes a build at once (tests).
func (f *cidFilter) finish() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for f.b != nil {
		f.chunkLocked(f.chunk)
	}
}

// bloom is a Bloom filter over 64-bit hashes: bitsPerKey bits a key of
// capacity, bloomProbes probes (about 1% false positives when full).
type bloom struct {
	bits     []uint64
	capacity uint64 // keys it was sized for
	n        uint64 // keys added (a key added twice counts twice)
}

const (
	bitsPerKey  = 10
	bloomProbes = 7
)

func newBloom(capacity uint64) *bloom {
	words := (capacity*bitsPerKey + 63) / 64
	return &bloom{bits: make([]uint64, max(words, 1)), capacity: capacity}
}

// probe i of h (double hashing).
func (b *bloom) bit(h uint64, i uint64) (word uint64, mask uint64) {
	m := uint64(len(b.bits)) * 64
	p := (h + i*(h>>32|1)) % m
	return p / 64, 1 << (p % 64)
}

func (b *bloom) add(h uint64) {
	for i := range uint64(bloomProbes) {
		w, m := b.bit(h, i)
		b.bits[w] |= m
	}
	b.n++
}

func (b *bloom) has(h uint64) bool {
	for i := range uint64(bloomProbes) {
		if w, m := b.bit(h, i); b.bits[w]&m == 0 {
			return false
		}
	}
	return true
}
