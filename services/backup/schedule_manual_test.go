package backup

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/testutil"
)

// A backup an operator took by hand (`edgechat backup`, kind "stream")
// into the store of the scheduled ones is not the schedule's: Prune
// neither counts nor deletes it, and the leader that has led all along
// does not see it. A new leader read the newest complete backup of any
// kind, so after a failover the manual one counted as the last scheduled
// one, and the scheduled backup due (an interval after the last
// scheduled one) was not taken until an interval after the manual one.
func TestNewLeaderDoesNotTakeAManualBackupForTheLastScheduledOne(t *testing.T) {
	_, _, src := fixture(t)
	st, _ := NewDirStore(t.TempDir())
	clock := testutil.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	src.Now = clock.Now
	cfg := SchedulerConfig{Every: 6 * time.Hour, Keep: 7, Store: st, Poll: time.Hour, Now: clock.Now,
		IsLeader: func() bool { return true }, Source: src, Log: testutil.QuietLogger()}
	a, err := NewScheduler(cfg)
	if err != nil {
		t.Fatal(err)
	}
	a.tick(tctx(t)) // the scheduled backup at 00:00
	if _, ok := a.LastBackup(); !ok {
		t.Fatal("no scheduled backup")
	}

	// 05:00: an operator backs up by hand into the same store.
	clock.Advance(5 * time.Hour)
	svc, err := NewService(src, nil, nil, testutil.QuietLogger())
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	svc.handleStream(rec, httptest.NewRequest(http.MethodGet, "/admin/backup", nil))
	manual := rec.Header().Get(HeaderID)
	if _, err := Receive(tctx(t), rec.Body, manual, st); err != nil {
		t.Fatal(err)
	}

	// 06:01: another node leads; the scheduled backup of 06:00 is due.
	clock.Advance(time.Hour + time.Minute)
	b, err := NewScheduler(cfg)
	if err != nil {
		t.Fatal(err)
	}
	b.tick(tctx(t))
	ids, _ := st.IDs(tctx(t))
	if len(ids) != 3 {
		t.Fatalf("store after the new leader's first tick at 06:01: %v; want a new scheduled backup beside the 00:00 one and the manual %s (the new leader knows %q as the last)",
			ids, manual, b.Status().LastID)
	}
}
