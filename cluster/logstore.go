package cluster

import (
	"slices"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
	walfs "github.com/hashicorp/raft-wal/fs"
	"github.com/hashicorp/raft-wal/segment"
	"github.com/prometheus/client_golang/prometheus"
)

// logStore is the Raft log as Raft sees it: raft-wal with two changes,
// both measured on three nodes at 1,000 msg/s (docs/perf/cluster.md,
// fourth session).
//
//   - The newest entries are kept in memory (up to logCacheEntries and
//     logCacheBytes of payload). Every entry is read back right after it
//     is written: by the leader once per follower to replicate it, and by
//     each follower's Raft to apply it; raft-wal reads each with a pread
//     (~10% of a node's CPU in the cluster benchmark at 1,000 proposals
//     per second). The cache holds the *raft.Log values Raft stored, and
//     hands out copies of them sharing the payload, which nothing writes
//     into (the FSM decodes commands as slices of it and keeps them only
//     as values handed to Badger or to callers).
//   - A log compaction that would free no segment file is not passed on.
//     raft-wal deletes only whole segments; a head truncation that frees
//     none still commits its metadata (bbolt, two fdatasyncs) while
//     holding the log's write lock, and every StoreLogs waits: 0.4–1 ms
//     on a quiet disk, 9–40 ms on a busy one, after every snapshot
//     (docs/perf/tail.md). Raft computes each compaction from FirstIndex,
//     so a skipped one is included in the next, and a longer log than
//     asked for only means a follower can be fed from the log a little
//     longer instead of by a snapshot. Only compactions that leave
//     entries behind are judged; removing the whole log (after a snapshot
//     was installed) and suffix truncations always go to raft-wal.
//
// It embeds *wal.WAL so that Raft still sees a MonotonicLogStore (after
// installing a snapshot Raft must empty such a log rather than compact
// it; an interface embedding would hide IsMonotonic).
type logStore struct {
	*wal.WAL
	segments *segment.Filer // lists the segment files
	skipped  prometheus.Counter
	// writeFailures counts failed appends; writeErr is the last one's
	// error until an append succeeds (WriteError).
	writeFailures prometheus.Counter
	writeErr      atomic.Pointer[error]

	mu    sync.RWMutex
	ring  []*raft.Log // cached entries, consecutive indexes
	head  int         // ring position of the oldest
	n     int         // entries cached
	bytes int         // their payload bytes
}

const (
	// logCacheEntries bounds the entries kept in memory: more than one
	// AppendEntries (maxAppendEntries) in flight to a follower that keeps
	// up; a follower further behind reads from the disk as before.
	logCacheEntries = 1024
	// logCacheBytes bounds their payload: at saturation an entry is
	// ~35 KB, so this keeps the last ~100 of them; at low rates entries
	// are small and the count is the bound.
	logCacheBytes = 4 << 20
)

func newLogStore(w *wal.WAL, dir string, skipped, writeFailures prometheus.Counter) *logStore {
	return &logStore{
		WAL:           w,
		segments:      segment.NewFiler(dir, walfs.New()),
		skipped:       skipped,
		writeFailures: writeFailures,
		ring:          make([]*raft.Log, logCacheEntries),
	}
}

// WriteError is the error of the last append if it failed (a full or
// failing disk), nil once one succeeded.
func (s *logStore) WriteError() error {
	if p := s.writeErr.Load(); p != nil {
		return *p
	}
	return nil
}

// GetLog answers from memory when it can.
func (s *logStore) GetLog(index uint64, out *raft.Log) error {
	s.mu.RLock()
	if s.n > 0 {
		first := s.ring[s.head].Index
		if index >= first && index < first+uint64(s.n) {
			*out = *s.ring[(s.head+int(index-first))%len(s.ring)]
			s.mu.RUnlock()
			return nil
		}
	}
	s.mu.RUnlock()
	return s.WAL.GetLog(index, out)
}

// StoreLog stores one entry (through StoreLogs, so that it is cached).
func (s *logStore) StoreLog(l *raft.Log) error { return s.StoreLogs([]*raft.Log{l}) }

// StoreLogs writes to raft-wal, then caches what was written.
func (s *logStore) StoreLogs(logs []*raft.Log) error {
	if err := s.WAL.StoreLogs(logs); err != nil {
		s.writeErr.Store(&err)
		if s.writeFailures != nil {
			s.writeFailures.Inc()
		}
		s.mu.Lock()
		s.reset()
		s.mu.Unlock()
		return err
	}
	if s.writeErr.Load() != nil {
		s.writeErr.Store(nil)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range logs {
		if s.n > 0 && s.ring[(s.head+s.n-1)%len(s.ring)].Index+1 != l.Index {
			s.reset() // not the next index: start over from this one
		}
		if s.n == len(s.ring) {
			s.dropOldest()
		}
		s.ring[(s.head+s.n)%len(s.ring)] = l
		s.n++
		s.bytes += len(l.Data)
		for s.n > 1 && s.bytes > logCacheBytes {
			s.dropOldest()
		}
	}
	return nil
}

// DeleteRange drops [min, max] from the cache and from raft-wal, unless
// it is a compaction that would free no segment file (see logStore).
func (s *logStore) DeleteRange(min, max uint64) error {
	s.mu.Lock()
	if s.n > 0 {
		first := s.ring[s.head].Index
		last := first + uint64(s.n) - 1
		switch {
		case max < first || min > last:
		case min <= first && max < last:
			for s.n > 0 && s.ring[s.head].Index <= max {
				s.dropOldest()
			}
		case min > first:
			for s.n > 0 && s.ring[(s.head+s.n-1)%len(s.ring)].Index >= min {
				s.dropNewest()
			}
		default:
			s.reset()
		}
	}
	s.mu.Unlock()
	if s.freesNothing(min, max) {
		s.skipped.Inc()
		return nil
	}
	return s.WAL.DeleteRange(min, max)
}

// freesNothing reports whether DeleteRange(min, max) is a head compaction
// that leaves entries in the log and would delete no segment file: no
// segment ends at or below max. A segment ends where the next one begins,
// so the one to look at is the second oldest file; files left behind by a
// deletion still in progress only make it answer false (the compaction
// then goes to raft-wal, as without this check).
func (s *logStore) freesNothing(min, max uint64) bool {
	first, err := s.WAL.FirstIndex()
	if err != nil {
		return false
	}
	last, err := s.WAL.LastIndex()
	if err != nil || min > first || max >= last {
		return false
	}
	segs, err := s.segments.List()
	if err != nil {
		return false
	}
	bases := make([]uint64, 0, len(segs))
	for _, b := range segs {
		bases = append(bases, b)
	}
	slices.Sort(bases)
	return len(bases) < 2 || bases[1] > max+1
}

func (s *logStore) dropOldest() {
	s.bytes -= len(s.ring[s.head].Data)
	s.ring[s.head] = nil
	s.head = (s.head + 1) % len(s.ring)
	s.n--
}

func (s *logStore) dropNewest() {
	i := (s.head + s.n - 1) % len(s.ring)
	s.bytes -= len(s.ring[i].Data)
	s.ring[i] = nil
	s.n--
}

func (s *logStore) reset() {
	clear(s.ring)
	s.head, s.n, s.bytes = 0, 0, 0
}
