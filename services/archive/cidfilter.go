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
//     and after an entry committed (for a bigger filter). It opens a read
//     transaction there, which sees every key written so far; the keys
//     the handler adds from then on go to the new filter too (recorded
//     until it is sized). The build counts the keys of that transaction,
//     sizes the filter and fills it, a few keys after each committed
//     message (step), on the FSM's goroutine: no goroutine outlives the
//     database, and the work follows the message rate. Until the first
//     build completes every check is a lookup.
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
}

// filterBuild is a build in progress: it counts the keys in tx, then
// fills next from tx.
type filterBuild struct {
	tx      *badger.Txn
	it      *badger.Iterator
	want    uint64   // capacity asked for (growth)
	n       uint64   // keys counted
	next    *bloom   // nil while counting
	pending []uint64 // hashes added while counting
}

const (
	minCIDFilterKeys = 1 << 18
	// stepKeys is how many keys a build reads after each committed
	// message: building costs about as much per message as the lookup
	// it saves, for a store of N messages during ~N/stepKeys messages.
	stepKeys = 256
)

func newCIDFilter(db *badger.DB, minKeys uint64) *cidFilter {
	f := &cidFilter{db: db, min: minKeys, seed: maphash.MakeSeed()}
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
	switch {
	case f.b == nil:
	case f.b.next != nil:
		f.b.next.add(h)
	default:
		f.b.pending = append(f.b.pending, h)
	}
}

// afterCommit runs after an entry's transaction committed (no handler
// has writes pending): it starts a bigger filter's build when the
// current one is full, and moves a build on by stepKeys keys.
func (f *cidFilter) afterCommit() {
	if f == nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.b == nil && f.cur != nil && f.cur.n > f.cur.capacity {
		f.startLocked(4 * f.cur.n)
	}
	f.stepLocked(stepKeys)
}

// purge drops the filter and any build (a snapshot replaced the state)
// and starts a build from the new state.
func (f *cidFilter) purge() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cur = nil
	f.stopLocked()
	f.startLocked(0)
}

func (f *cidFilter) start(want uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.startLocked(want)
}

// startLocked opens the build's transaction: call it only where no
// handler has uncommitted writes.
func (f *cidFilter) startLocked(want uint64) {
	tx := f.db.NewTransaction(false)
	prefix := dedupPrefix()
	it := tx.NewIterator(badger.IteratorOptions{Prefix: prefix}) // keys only
	it.Seek(prefix)
	f.b = &filterBuild{tx: tx, it: it, want: want}
}

func (f *cidFilter) stopLocked() {
	if f.b != nil {
		f.b.it.Close()
		f.b.tx.Discard()
		f.b = nil
	}
}

// stepLocked reads up to n keys of the build.
func (f *cidFilter) stepLocked(n int) {
	b := f.b
	if b == nil {
		return
	}
	prefix := dedupPrefix()
	for ; n > 0 && b.it.ValidForPrefix(prefix); n-- {
		if b.next == nil {
			b.n++
		} else {
			b.next.add(maphash.Bytes(f.seed, b.it.Item().Key()))
		}
		b.it.Next()
	}
	if b.it.ValidForPrefix(prefix) {
		return
	}
	if b.next == nil {
		// Counted: size the filter, take in what was added meanwhile
		// and read the keys again from the same transaction.
		b.next = newBloom(max(f.min, b.want, 2*b.n))
		for _, h := range b.pending {
			b.next.add(h)
		}
		b.pending = nil
		b.it.Seek(prefix)
		return
	}
	next := b.next
	f.stopLocked()
	f.cur = next
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
		f.stepLocked(1 << 20)
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
