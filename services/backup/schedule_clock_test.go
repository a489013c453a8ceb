package backup

import (
	"context"
	"errors"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/testutil"
)

// The schedule goes by the time in the backups' IDs (a new leader's
// "last backup" is the newest by ID; Prune keeps the newest by ID;
// restore without --id takes the newest by ID). A leader whose clock ran
// a day ahead took a backup; NTP then stepped the clock back. The
// scheduler waited until its clock passed that backup's date plus the
// interval: no backup for a day and more, and no overdue warning (the
// newest backup looked younger than the interval all along). A backup
// dated ahead of the clock counts as taken when the scheduler first saw
// it, and the next one is dated after it, so that it is the newest: the
// one Prune keeps and restore takes.
func TestScheduleGoesOnAfterTheClockStepsBack(t *testing.T) {
	_, _, src := fixture(t)
	st, _ := NewDirStore(t.TempDir())
	clock := testutil.NewFakeClock(time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC)) // a day ahead
	src.Now = clock.Now
	sc, err := NewScheduler(SchedulerConfig{Every: 6 * time.Hour, Keep: 1, Store: st, Poll: time.Hour, Now: clock.Now,
		IsLeader: func() bool { return true }, Source: src, Log: testutil.QuietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	sc.tick(tctx(t))
	ahead, ok := sc.LastBackup()
	if !ok {
		t.Fatal("no backup")
	}
	clock.Set(time.Date(2026, 1, 1, 0, 10, 0, 0, time.UTC)) // NTP steps the clock back
	sc.tick(tctx(t))
	if ids, _ := st.IDs(tctx(t)); len(ids) != 1 {
		t.Fatalf("a backup at once after the step: %v", ids)
	}
	for range 6 {
		clock.Advance(time.Hour)
		sc.tick(tctx(t))
	}
	// 06:10, an interval after the step was seen: a backup is due.
	last, _ := sc.LastBackup()
	if !last.After(ahead) {
		t.Fatalf("no backup an interval after the clock stepped back (newest still %v, now %v, overdue %v)", ahead, clock.Now(), sc.Overdue())
	}
	id, err := Latest(tctx(t), st)
	if err != nil {
		t.Fatal(err)
	}
	ids, _ := st.IDs(tctx(t))
	if id != sc.Status().LastID || len(ids) != 1 {
		t.Fatalf("after the backup and the prune (keep 1): store %v, newest %s; want only the new backup %s", ids, id, sc.Status().LastID)
	}
}

// Nor does the overdue warning: with every backup after the step
// failing, it comes twice the interval after the step was seen.
func TestOverdueAfterTheClockStepsBack(t *testing.T) {
	_, _, src := fixture(t)
	st, _ := NewDirStore(t.TempDir())
	clock := testutil.NewFakeClock(time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC)) // a day ahead
	src.Now = clock.Now
	var failing atomic.Bool
	state := src.State
	src.State = func(ctx context.Context) (int64, uint64, io.ReadCloser, error) {
		if failing.Load() {
			return 0, 0, nil, errors.New("the node cannot read its state")
		}
		return state(ctx)
	}
	sc, err := NewScheduler(SchedulerConfig{Every: time.Hour, Keep: 2, Store: st, Poll: time.Hour, Now: clock.Now,
		IsLeader: func() bool { return true }, Source: src, Log: testutil.QuietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	sc.tick(tctx(t))
	failing.Store(true) // every later backup fails
	clock.Set(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	for range 3 {
		sc.tick(tctx(t))
		clock.Advance(time.Hour)
	}
	sc.tick(tctx(t))
	if !sc.Overdue() || !sc.Status().Overdue {
		t.Fatalf("not overdue at %v, three hours after the clock stepped back, with no backup since (newest dated %v)", clock.Now(), sc.Status().LastSuccess)
	}
}
