package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// openLogStore opens a raft-wal with small segments under a temporary
// directory, wrapped as Raft sees it.
func openLogStore(t *testing.T, segmentSize int) (*logStore, prometheus.Counter) {
	t.Helper()
	dir := t.TempDir()
	meta := &metadb.BoltMetaDB{}
	w, err := wal.Open(dir, wal.WithMetaStore(meta), wal.WithSegmentSize(segmentSize))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.Close(); _ = meta.Close() })
	skipped := prometheus.NewCounter(prometheus.CounterOpts{Name: "skipped"})
	return newLogStore(w, dir, skipped, nil), skipped
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

func entryData(i uint64, size int) []byte {
	b := bytes.Repeat([]byte{byte(i)}, size)
	copy(b, fmt.Sprint(i))
	return b
}

func storeEntries(t *testing.T, s *logStore, from, to uint64, size int) {
	t.Helper()
	for i := from; i <= to; i++ {
		if err := s.StoreLogs([]*raft.Log{{Index: i, Term: 1, Type: raft.LogCommand, Data: entryData(i, size)}}); err != nil {
			t.Fatal(err)
		}
	}
}

// Raft must still see raft-wal as monotonic: after installing a snapshot
// it empties such a log instead of compacting it (raft-wal refuses an
// append with a gap).
func TestLogStoreIsMonotonic(t *testing.T) {
	s, _ := openLogStore(t, 64<<10)
	var logs raft.LogStore = s
	m, ok := logs.(raft.MonotonicLogStore)
	if !ok || !m.IsMonotonic() {
		t.Fatal("the log store does not report itself monotonic")
	}
}

// What GetLog answers is what was stored, whether it comes from the cache
// or from the disk, across the cache's bounds and after truncations.
func TestLogStoreCacheAnswersWhatWasStored(t *testing.T) {
	s, _ := openLogStore(t, 1<<20)
	const last uint64 = logCacheEntries + 200
	storeEntries(t, s, 1, last, 100)
	check := func(from, to uint64) {
		t.Helper()
		for i := from; i <= to; i++ {
			var l raft.Log
			if err := s.GetLog(i, &l); err != nil {
				t.Fatalf("GetLog(%d): %v", i, err)
			}
			if l.Index != i || !bytes.Equal(l.Data, entryData(i, 100)) {
				t.Fatalf("GetLog(%d) = index %d, data %q", i, l.Index, l.Data[:8])
			}
		}
	}
	check(1, last)
	if s.n != logCacheEntries {
		t.Errorf("cached %d entries, want %d", s.n, logCacheEntries)
	}
	// A suffix truncation (a follower's conflicting entries), then other
	// entries at the same indexes.
	if err := s.DeleteRange(last-10, last); err != nil {
		t.Fatal(err)
	}
	var l raft.Log
	if err := s.GetLog(last-5, &l); !errors.Is(err, raft.ErrLogNotFound) {
		t.Fatalf("GetLog after truncation: %v, want not found", err)
	}
	for i := last - 10; i <= last; i++ {
		if err := s.StoreLogs([]*raft.Log{{Index: i, Term: 2, Data: []byte("new")}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.GetLog(last-5, &l); err != nil || l.Term != 2 || string(l.Data) != "new" {
		t.Fatalf("GetLog after rewrite: %+v, %v", l, err)
	}
	check(1, last-11)
	// Large entries: the byte bound holds.
	storeEntries(t, s, last+1, last+100, 256<<10)
	if s.bytes > logCacheBytes {
		t.Errorf("cached %d bytes, bound %d", s.bytes, logCacheBytes)
	}
}

// A compaction that would delete no segment file is not passed to
// raft-wal (the log keeps its first index); one that frees a segment,
// and one that empties the log, are.
func TestLogStoreSkipsCompactionsThatFreeNoSegment(t *testing.T) {
	s, skipped := openLogStore(t, 64<<10)
	storeEntries(t, s, 1, 300, 1000) // ~300 KB: several 64 KB segments
	segs, err := s.segments.List()
	if err != nil || len(segs) < 3 {
		t.Fatalf("segments %v, %v", segs, err)
	}
	// Inside the first segment: nothing to free.
	if err := s.DeleteRange(1, 10); err != nil {
		t.Fatal(err)
	}
	if first, _ := s.FirstIndex(); first != 1 {
		t.Errorf("first index %d after a compaction that frees nothing, want 1", first)
	}
	if got := counterValue(t, skipped); got != 1 {
		t.Errorf("skipped %v, want 1", got)
	}
	var l raft.Log
	if err := s.GetLog(5, &l); err != nil || !bytes.Equal(l.Data, entryData(5, 1000)) {
		t.Fatalf("GetLog(5) after a skipped compaction: %v", err)
	}
	// Up to the middle of the log: whole segments go.
	if err := s.DeleteRange(1, 150); err != nil {
		t.Fatal(err)
	}
	if first, _ := s.FirstIndex(); first != 151 {
		t.Errorf("first index %d, want 151", first)
	}
	after, _ := s.segments.List()
	if len(after) >= len(segs) {
		t.Errorf("segments %d -> %d, want fewer", len(segs), len(after))
	}
	// The whole log (after a snapshot was installed): always passed on.
	if err := s.DeleteRange(151, 300); err != nil {
		t.Fatal(err)
	}
	if last, _ := s.LastIndex(); last != 0 {
		t.Errorf("last index %d after removing the whole log, want 0", last)
	}
	if got := counterValue(t, skipped); got != 1 {
		t.Errorf("skipped %v, want 1", got)
	}
}

// A failed append is remembered until one succeeds (the node is not
// ready meanwhile: node.readiness), and counted.
func TestLogStoreRemembersAFailedAppend(t *testing.T) {
	s, _ := openLogStore(t, 64<<10)
	s.writeFailures = prometheus.NewCounter(prometheus.CounterOpts{Name: "failures"})
	storeEntries(t, s, 1, 3, 100)
	if err := s.WriteError(); err != nil {
		t.Fatalf("WriteError after good appends: %v", err)
	}
	// raft-wal refuses a gap: a failure as any other.
	bad := s.StoreLogs([]*raft.Log{{Index: 7, Term: 1, Type: raft.LogCommand, Data: entryData(7, 100)}})
	if bad == nil {
		t.Fatal("an append with a gap succeeded")
	}
	if err := s.WriteError(); err == nil || err.Error() != bad.Error() {
		t.Fatalf("WriteError %v, want the append's error %v", err, bad)
	}
	if got := counterValue(t, s.writeFailures); got != 1 {
		t.Fatalf("failures counted %v, want 1", got)
	}
	storeEntries(t, s, 4, 4, 100)
	if err := s.WriteError(); err != nil {
		t.Fatalf("WriteError after an append succeeded again: %v", err)
	}
}
