package backup

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// TestRestoreRefusesAnArchiveStoreInUse: the restored cluster's sealer
// deletes, as orphans, every object of its archive store that its state
// does not reference. Restored into the archive bucket of a cluster that
// still runs (a restore tried out against the production object store:
// same S3 store, same default bucket), it would delete that cluster's
// segments sealed after the backup an hour later. Restore refuses an
// archive store holding a segment the backup does not, and writes
// nothing; segments the backup holds byte for byte are no obstacle. With
// AdoptArchive (the old cluster is gone for good) it goes ahead, and a
// failure half-way removes only what it added, never an object that was
// there before.
func TestRestoreRefusesAnArchiveStoreInUse(t *testing.T) {
	_, segs, src := fixture(t)
	st, m := backupToDir(t, src)
	data := t.TempDir()
	archive := data + "-archive"
	put := func(key string, b []byte) {
		t.Helper()
		p := filepath.Join(archive, filepath.FromSlash(key))
		if err := os.MkdirAll(filepath.Dir(p), 0o750); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o640); err != nil {
			t.Fatal(err)
		}
	}
	same := "d/alice/bob/1-10.seg"
	put(same, segs[same]) // the backup holds it too: the same object
	newer := "d/alice/bob/11-20.seg"
	put(newer, []byte("sealed by the running cluster after the backup"))

	_, err := Restore(tctx(t), st, m.ID, restoreOpts(data))
	if !errors.Is(err, ErrArchiveInUse) {
		t.Fatalf("restore into an archive store holding another segment: %v, want ErrArchiveInUse", err)
	}
	if _, serr := os.Stat(filepath.Join(data, "db")); !errors.Is(serr, os.ErrNotExist) {
		t.Fatalf("refused restore wrote the database: %v", serr)
	}
	for _, key := range []string{"d/alice/carol/3-4.seg", "g/g1/5-9.seg"} {
		if _, serr := os.Stat(filepath.Join(archive, filepath.FromSlash(key))); !errors.Is(serr, os.ErrNotExist) {
			t.Fatalf("refused restore wrote segment %s: %v", key, serr)
		}
	}

	// Adopted, and the last segment fails: what was there stays.
	o := restoreOpts(data)
	o.AdoptArchive = true
	o.Segments = failingLast{o.Segments.(DirSegments), "g/g1/5-9.seg"}
	if _, err := Restore(tctx(t), st, m.ID, o); err == nil {
		t.Fatal("restore with a failing segment store succeeded")
	}
	for key, want := range map[string][]byte{same: segs[same], newer: []byte("sealed by the running cluster after the backup")} {
		if b, err := os.ReadFile(filepath.Join(archive, filepath.FromSlash(key))); err != nil || !bytes.Equal(b, want) {
			t.Fatalf("failed restore removed %s, which was there before: %v", key, err)
		}
	}
	if _, serr := os.Stat(filepath.Join(archive, "d/alice/carol/3-4.seg")); !errors.Is(serr, os.ErrNotExist) {
		t.Fatalf("failed restore left a segment it wrote: %v", serr)
	}

	// Adopted: restored.
	o = restoreOpts(data)
	o.AdoptArchive = true
	if _, err := Restore(tctx(t), st, m.ID, o); err != nil {
		t.Fatalf("restore adopting the archive store: %v", err)
	}
	for key, want := range segs {
		if b, err := os.ReadFile(filepath.Join(archive, filepath.FromSlash(key))); err != nil || !bytes.Equal(b, want) {
			t.Errorf("segment %s: %d bytes, %v", key, len(b), err)
		}
	}
}

// failingLast fails the put of one key.
type failingLast struct {
	DirSegments
	key string
}

func (f failingLast) PutSegment(ctx context.Context, key string, r io.Reader, size int64) error {
	if key == f.key {
		return errors.New("the store failed")
	}
	return f.DirSegments.PutSegment(ctx, key, r, size)
}
