package backup

import (
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/testutil"
)

// TestScheduledBackupThatFailsLeavesNothing: a scheduled backup that
// fails after writing its state (here a segment missing from the archive
// store) is deleted, as a failed `edgechat backup` is. The schedule
// retries every minute while it fails, and each attempt left a full copy
// of the state in the backup store until a later successful backup's
// prune, a day on: a backup store that fills up.
func TestScheduledBackupThatFailsLeavesNothing(t *testing.T) {
	_, segs, src := fixture(t)
	delete(segs, "g/g1/5-9.seg")
	st, _ := NewDirStore(t.TempDir())
	sc, err := NewScheduler(SchedulerConfig{Every: time.Hour, Keep: 2, Store: st,
		IsLeader: func() bool { return true }, Source: src, Log: testutil.QuietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := sc.BackupNow(tctx(t)); err == nil {
			t.Fatal("a backup with a segment missing from the archive succeeded")
		}
	}
	if ids, err := st.IDs(tctx(t)); err != nil || len(ids) != 0 {
		t.Fatalf("failed scheduled backups left %v in the store (%v), want nothing", ids, err)
	}
}
