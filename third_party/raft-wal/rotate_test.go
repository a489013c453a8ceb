package wal

import (
	"errors"
	"fmt"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/hashicorp/raft-wal/fs"
	"github.com/hashicorp/raft-wal/metadb"
	"github.com/hashicorp/raft-wal/segment"
	"github.com/hashicorp/raft-wal/types"
)

// Tests of PATCHES.md's patch: a segment rotation that fails (a full disk
// here: the metadata commit or the new segment file refused with ENOSPC)
// leaves the tail sealed; appends must work again once the disk has room,
// without and with a restart in between. Real files in a temporary
// directory; only the refusals are injected.

// fullDisk makes the wrapped metadata store and file system refuse
// writes with ENOSPC while it is set.
type fullDisk struct{ meta, files atomic.Bool }

type fullMeta struct {
	types.MetaStore
	d *fullDisk
}

func (m fullMeta) CommitState(s types.PersistentState) error {
	if m.d.meta.Load() {
		return fmt.Errorf("commit wal metadata: %w", syscall.ENOSPC)
	}
	return m.MetaStore.CommitState(s)
}

type fullVFS struct {
	types.VFS
	d *fullDisk
}

func (v fullVFS) Create(dir, name string, size uint64) (types.WritableFile, error) {
	if v.d.files.Load() {
		return nil, fmt.Errorf("create %s: %w", name, syscall.ENOSPC)
	}
	return v.VFS.Create(dir, name, size)
}

func openFull(t *testing.T, dir string, d *fullDisk) *WAL {
	t.Helper()
	w, err := Open(dir,
		WithMetaStore(fullMeta{MetaStore: &metadb.BoltMetaDB{}, d: d}),
		WithSegmentFiler(segment.NewFiler(dir, fullVFS{VFS: fs.New(), d: d})),
		WithSegmentSize(8<<10), // a rotation every ~60 entries
	)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func entry(i uint64) *raft.Log {
	return &raft.Log{Index: i, Term: 1, Type: raft.LogCommand, Data: fmt.Appendf(nil, "entry %d %0100d", i, i)}
}

// appendUntilRefused appends one entry at a time from next on until an
// append fails, and returns the index that failed.
func appendUntilRefused(t *testing.T, w *WAL, next uint64) uint64 {
	t.Helper()
	for i := next; i < next+1000; i++ {
		if err := w.StoreLogs([]*raft.Log{entry(i)}); err != nil {
			if errors.Is(err, ErrSealed) {
				t.Logf("append %d: %v", i, err)
			}
			return i
		}
	}
	t.Fatal("no append failed in 1000 with the disk full")
	return 0
}

func checkEntries(t *testing.T, w *WAL, first, last uint64) {
	t.Helper()
	for i := first; i <= last; i++ {
		var l raft.Log
		if err := w.GetLog(i, &l); err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
		if want := entry(i); string(l.Data) != string(want.Data) {
			t.Fatalf("entry %d holds %q", i, l.Data)
		}
	}
	if got, err := w.LastIndex(); err != nil || got != last {
		t.Fatalf("last index %d (%v), want %d", got, err, last)
	}
}

func TestAppendsResumeAfterARotationFailed(t *testing.T) {
	for _, c := range []struct {
		name    string
		refuse  func(d *fullDisk, on bool)
		restart bool
		// compact: a head truncation (Raft's log compaction, which frees
		// segments) must go through while only new files are refused;
		// it needs no new segment, so it does not try the rotation.
		compact bool
	}{
		{"metadata refused", func(d *fullDisk, on bool) { d.meta.Store(on) }, false, false},
		{"segment file refused", func(d *fullDisk, on bool) { d.files.Store(on) }, false, true},
		{"metadata refused, then a restart", func(d *fullDisk, on bool) { d.meta.Store(on) }, true, false},
		{"segment file refused, then a restart", func(d *fullDisk, on bool) { d.files.Store(on) }, true, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			d := &fullDisk{}
			w := openFull(t, dir, d)
			defer func() { _ = w.Close() }()
			if err := w.StoreLogs([]*raft.Log{entry(1)}); err != nil {
				t.Fatal(err)
			}
			c.refuse(d, true)
			failed := appendUntilRefused(t, w, 2)
			// Still refused: the append fails again, and changes nothing.
			if err := w.StoreLogs([]*raft.Log{entry(failed)}); err == nil {
				t.Fatalf("append %d succeeded with the disk still full", failed)
			}
			checkEntries(t, w, 1, failed-1)
			first := uint64(1)
			if c.compact {
				if err := w.DeleteRange(1, 10); err != nil {
					t.Fatalf("compaction while no file can be created: %v", err)
				}
				first = 11
				checkEntries(t, w, first, failed-1)
			}
			c.refuse(d, false)
			if c.restart {
				if err := w.Close(); err != nil {
					t.Fatal(err)
				}
				w = openFull(t, dir, d)
				checkEntries(t, w, first, failed-1)
			}
			// Room again: the append that failed goes through, and so do
			// enough after it for several more rotations.
			last := failed + 200
			for i := failed; i <= last; i++ {
				if err := w.StoreLogs([]*raft.Log{entry(i)}); err != nil {
					t.Fatalf("append %d once the disk had room: %v", i, err)
				}
			}
			checkEntries(t, w, first, last)
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			w = openFull(t, dir, d)
			checkEntries(t, w, first, last)
		})
	}
}
