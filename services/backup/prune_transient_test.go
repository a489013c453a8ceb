package backup

import (
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/testutil"
)

// flakyStore fails reads of one backup's manifest with a transient
// error (a timeout, an S3 503), as an object store does now and then.
type flakyStore struct {
	Store
	failID string
}

func (f flakyStore) Open(ctx context.Context, name string) (io.ReadCloser, error) {
	if strings.HasPrefix(name, f.failID+"/") && strings.HasSuffix(name, ManifestName) {
		return nil, errors.New("503 Slow Down: please reduce your request rate")
	}
	return f.Store.Open(ctx, name)
}

func dayOfBackups(t *testing.T) (Store, []string, time.Time) {
	_, _, src := fixture(t)
	dir, _ := NewDirStore(t.TempDir())
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	src.Now = func() time.Time { now = now.Add(6 * time.Hour); return now }
	var ids []string
	for range 4 { // every 6 hours: a day of backups
		m, err := Write(tctx(t), src, &StoreSink{Store: dir})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, m.ID)
	}
	return dir, ids, now
}

// A complete backup whose manifest cannot be read for a moment is not an
// incomplete one: Prune keeps it and reports the error (before, it
// deleted a complete day-old backup).
func TestPruneKeepsABackupWhoseManifestReadFailsTransiently(t *testing.T) {
	dir, ids, now := dayOfBackups(t)
	// keep 14: nothing is due for deletion. The oldest (a day old)
	// answers one read with an error.
	err := Prune(tctx(t), flakyStore{Store: dir, failID: ids[0]}, 14, now.Add(12*time.Hour), testutil.QuietLogger())
	if err == nil || !strings.Contains(err.Error(), "503") {
		t.Errorf("Prune = %v, want the manifest read error", err)
	}
	left, _ := dir.IDs(tctx(t))
	if !slices.Contains(left, ids[0]) {
		t.Fatalf("Prune deleted complete backup %s after one failed manifest read; left %v", ids[0], left)
	}
}

// Latest does not answer an older backup when the newest one's manifest
// cannot be read now: it returns the error.
func TestLatestReportsATransientManifestErrorInsteadOfAnOlderBackup(t *testing.T) {
	dir, ids, _ := dayOfBackups(t)
	id, err := Latest(tctx(t), flakyStore{Store: dir, failID: ids[3]})
	if err == nil || errors.Is(err, ErrNotFound) {
		t.Fatalf("Latest = %q, %v; want the newest backup's read error", id, err)
	}
	if id, err := Latest(tctx(t), dir); err != nil || id != ids[3] {
		t.Fatalf("Latest without errors = %q, %v; want %s", id, err, ids[3])
	}
}
