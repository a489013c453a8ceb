package backup

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/testutil"
)

// A scheduled backup names its cluster (SchedulerConfig.ClusterID), and
// the schedule's prune counts and deletes only its cluster's of its
// region, and those without an ID (earlier versions, or taken below
// feature level 2, perhaps by this cluster). A cluster still without
// an ID deletes none that name one.
func TestPruneCountsOnlyItsClustersBackups(t *testing.T) {
	_, _, src := fixture(t)
	dir, _ := NewDirStore(t.TempDir())
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	src.Now = func() time.Time { now = now.Add(time.Hour); return now }
	take := func(region, cluster string) string {
		t.Helper()
		s := src
		s.Info = func() Manifest { return Manifest{Region: region, Cluster: cluster} }
		m, err := Write(tctx(t), s, &StoreSink{Store: dir})
		if err != nil {
			t.Fatal(err)
		}
		return m.ID
	}
	legacy := take("eu", "")
	other := take("eu", "bbbb")
	otherRegion := take("us", "aaaa")
	mine := take("eu", "aaaa")

	sched := func(cluster string) *Scheduler {
		s, err := NewScheduler(SchedulerConfig{Every: time.Hour, Keep: 1, Store: dir, Region: "eu",
			ClusterID: func(context.Context) (string, error) { return cluster, nil },
			IsLeader:  func() bool { return true }, Source: src, Now: func() time.Time { return now },
			Log: testutil.QuietLogger()})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	left := func() []string {
		ids, _ := dir.IDs(tctx(t))
		slices.Sort(ids)
		return ids
	}
	// A cluster without an ID yet (below level 2) counts the backup
	// without one: its own newest; the others' stay.
	m, err := sched("").BackupNow(tctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if m.Cluster != "" {
		t.Errorf("backup of a cluster without an ID names %q", m.Cluster)
	}
	if got, want := left(), []string{other, otherRegion, mine, m.ID}; !slices.Equal(got, want) {
		t.Fatalf("after the prune of a cluster without an ID: %v, want %v (legacy %s deleted)", got, want, legacy)
	}
	// Cluster aaaa: its own and the one without an ID count; bbbb's and
	// region us's stay.
	m2, err := sched("aaaa").BackupNow(tctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if m2.Cluster != "aaaa" {
		t.Errorf("backup names cluster %q, want aaaa", m2.Cluster)
	}
	if got, want := left(), []string{other, otherRegion, m2.ID}; !slices.Equal(got, want) {
		t.Fatalf("after cluster aaaa's prune (keep 1): %v, want %v", got, want)
	}
}
