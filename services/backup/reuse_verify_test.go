package backup

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/testutil"
)

// A scheduled backup takes each segment the previous backup holds with
// the same name, size and SHA-256 from there (a hard link) instead of
// the archive store. It took the previous copy as the manifest describes
// it, unread: a copy damaged since (a bad disk block, a file changed by
// hand) went into every later backup, each reported taken, while restore
// (which checks every file's SHA-256) refuses them all; with the archive
// store holding the good segment all along. A reused copy is checked,
// and a damaged one is read from the archive store again.
func TestScheduledBackupDoesNotReuseADamagedSegment(t *testing.T) {
	_, _, src := fixture(t)
	st, _ := NewDirStore(t.TempDir())
	clock := testutil.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	src.Now = clock.Now
	sc, err := NewScheduler(SchedulerConfig{Every: time.Hour, Keep: 7, Store: st, Now: clock.Now,
		IsLeader: func() bool { return true }, Source: src, Log: testutil.QuietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	first, err := sc.BackupNow(tctx(t))
	if err != nil {
		t.Fatal(err)
	}
	// The first backup's copy of a segment is damaged in place (same size).
	p := filepath.Join(st.root, first.ID, SegmentDir, "d/alice/bob/1-10.seg")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, bytes.ToUpper(b), 0o640); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Hour)
	second, err := sc.BackupNow(tctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(tctx(t), st, second.ID, testRefOf); err != nil {
		t.Fatalf("the backup taken after the previous one's copy was damaged does not verify (restore refuses it): %v", err)
	}
}
