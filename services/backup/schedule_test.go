package backup

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgechat/edgechat/internal/testutil"
)

// TestSchedulerLeaderOnlyKeepsN: only while leading, one backup per
// interval, the newest Keep kept; a new leader reads the store and does
// not back up before the interval since the newest backup has passed.
func TestSchedulerLeaderOnlyKeepsN(t *testing.T) {
	s, _, src := fixture(t)
	st, _ := NewDirStore(t.TempDir())
	reg := prometheus.NewRegistry()
	metrics, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	var leader atomic.Bool
	var notLeading atomic.Int64 // ticks that found the node not leading
	isLeader := func() bool {
		l := leader.Load()
		if !l {
			notLeading.Add(1)
		}
		return l
	}
	sc, err := NewScheduler(SchedulerConfig{Every: 150 * time.Millisecond, Keep: 2, Store: st, Poll: 10 * time.Millisecond,
		IsLeader: isLeader, Source: src, Metrics: metrics, Log: testutil.QuietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sc.Run(ctx) }()
	defer func() { cancel(); <-done }()

	time.Sleep(100 * time.Millisecond)
	if ids, _ := st.IDs(tctx(t)); len(ids) != 0 {
		t.Fatalf("a follower took backups: %v", ids)
	}
	leader.Store(true)
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if v, _ := testutil.MetricValue(t, reg, "edgechat_backups_total", map[string]string{"kind": "scheduled", "result": "ok"}); v < 4 {
			return fmt.Errorf("%v backups so far", v)
		}
		return nil
	})
	s.put("msg/more", "y") // a state change between backups is fine (the FSM is not locked)
	leader.Store(false)
	// A backup in flight (written, maybe not pruned yet) finishes before
	// Run's next tick asks IsLeader: await a tick that found the node
	// not leading. (A fixed 30 ms was too short under a loaded CI.)
	since := notLeading.Load()
	testutil.CheckFor(t, 10*time.Second, time.Millisecond, func() error {
		if notLeading.Load() == since {
			return fmt.Errorf("no tick since leading ended")
		}
		return nil
	})
	ids, _ := st.IDs(tctx(t))
	if len(ids) != 2 {
		t.Fatalf("store holds %v, want the newest 2", ids)
	}
	// Each backup took the unchanged segments from the previous one.
	a, _ := os.Stat(filepath.Join(st.root, sortedIDs(ids)[0], "segments/g/g1/5-9.seg"))
	b, _ := os.Stat(filepath.Join(st.root, sortedIDs(ids)[1], "segments/g/g1/5-9.seg"))
	if a == nil || b == nil || !os.SameFile(a, b) {
		t.Error("scheduled backups do not share unchanged segments")
	}
	stat := sc.Status()
	// Not Overdue: on a loaded machine 2×150 ms pass before this line
	// (TestSchedulerOverdueAfterTwiceTheInterval checks it).
	if stat.LastID != sortedIDs(ids)[1] || stat.LastBytes == 0 {
		t.Fatalf("status %+v, store %v", stat, ids)
	}
	if last, ok := sc.LastBackup(); !ok || time.Since(last) > 2*time.Second {
		t.Fatalf("LastBackup %v %v", last, ok)
	}
	if v, ok := testutil.MetricValue(t, reg, "edgechat_backup_last_success_timestamp_seconds", map[string]string{"kind": "scheduled"}); !ok || v < float64(time.Now().Add(-time.Minute).Unix()) {
		t.Fatalf("last success metric %v %v", v, ok)
	}

	// A new leader on another node: it reads the store first.
	sc2, _ := NewScheduler(SchedulerConfig{Every: time.Hour, Keep: 2, Store: st, Poll: 10 * time.Millisecond,
		IsLeader: func() bool { return true }, Source: src, Log: testutil.QuietLogger()})
	sc2.tick(tctx(t))
	if ids2, _ := st.IDs(tctx(t)); len(ids2) != 2 {
		t.Fatalf("new leader backed up at once though the newest backup is fresh: %v", ids2)
	}
	if st2 := sc2.Status(); st2.LastID != stat.LastID {
		t.Fatalf("new leader knows %q, want %q", st2.LastID, stat.LastID)
	}
}

// TestPrune keeps the newest complete backups, removes older ones and
// incomplete ones older than StaleAfter, and leaves a recent incomplete
// one (it may be being written).
func TestPrune(t *testing.T) {
	_, _, src := fixture(t)
	st, _ := NewDirStore(t.TempDir())
	now := time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC)
	src.Now = func() time.Time { now = now.Add(time.Minute); return now }
	var complete []string
	for range 3 {
		m, err := Write(tctx(t), src, &StoreSink{Store: st})
		if err != nil {
			t.Fatal(err)
		}
		complete = append(complete, m.ID)
	}
	mk := func(id string) {
		if err := os.MkdirAll(filepath.Join(st.root, id), 0o750); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(st.root, id, StateName), []byte("partial"), 0o640)
	}
	mk("20251231T000000.000Z-1") // two days old: abandoned
	mk("20260101T230000.000Z-2") // an hour old: maybe still being written
	mk("20260102T010000.000Z-9") // newer than the complete ones
	mk("manual-copy")            // not named by us
	if err := Prune(tctx(t), st, 2, now, testutil.QuietLogger()); err != nil {
		t.Fatal(err)
	}
	ids, _ := st.IDs(tctx(t))
	want := sortedIDs([]string{"20260101T230000.000Z-2", complete[1], complete[2], "20260102T010000.000Z-9", "manual-copy"})
	if fmt.Sprint(sortedIDs(ids)) != fmt.Sprint(want) {
		t.Fatalf("after prune: %v, want %v", sortedIDs(ids), want)
	}
}

// A backup is overdue once the newest is older than twice the interval.
func TestSchedulerOverdueAfterTwiceTheInterval(t *testing.T) {
	_, _, src := fixture(t)
	st, _ := NewDirStore(t.TempDir())
	clock := testutil.NewFakeClock(time.Now())
	sc, err := NewScheduler(SchedulerConfig{Every: time.Hour, Keep: 2, Store: st, Poll: time.Hour, Now: clock.Now,
		IsLeader: func() bool { return true }, Source: src, Log: testutil.QuietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	sc.tick(tctx(t))
	if _, ok := sc.LastBackup(); !ok || sc.Overdue() {
		t.Fatalf("after a backup: taken %v, overdue %v", ok, sc.Overdue())
	}
	clock.Advance(119 * time.Minute)
	if sc.Overdue() || sc.Status().Overdue {
		t.Fatal("overdue before twice the interval")
	}
	clock.Advance(2 * time.Minute)
	if !sc.Overdue() || !sc.Status().Overdue {
		t.Fatal("not overdue after twice the interval")
	}
}
