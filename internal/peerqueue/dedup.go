package peerqueue

import "sync"

// Dedup is the receiving side of queues whose batches have contiguous
// positions (memory queues; Persistent queues over a Source without
// gaps): per sender it remembers the epoch and the next position it
// applied, so that the part of a batch a retry resends after a lost
// acknowledgement is skipped.
type Dedup struct {
	mu   sync.Mutex
	srcs map[string]*dedupSource
}

type dedupSource struct {
	mu    sync.Mutex
	epoch uint64
	next  uint64
}

// Accept calls apply with the number of leading items of the batch (from,
// epoch, seq, n items) already applied, which apply skips; then the batch
// counts as applied. Batches of one sender are accepted one at a time, so
// a retry racing its original (whose reply was lost) waits and then finds
// its items applied.
func (d *Dedup) Accept(from string, epoch, seq uint64, n int, apply func(skip int)) {
	d.mu.Lock()
	if d.srcs == nil {
		d.srcs = map[string]*dedupSource{}
	}
	src := d.srcs[from]
	if src == nil {
		src = &dedupSource{}
		d.srcs[from] = src
	}
	d.mu.Unlock()

	src.mu.Lock()
	defer src.mu.Unlock()
	skip := 0
	if src.epoch == epoch && src.next > seq {
		skip = int(min(src.next-seq, uint64(n)))
	}
	apply(skip)
	if src.epoch != epoch || seq+uint64(n) > src.next {
		src.epoch, src.next = epoch, seq+uint64(n)
	}
}
