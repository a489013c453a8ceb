package node_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgechat/edgechat/cluster"
	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
	"github.com/edgechat/edgechat/services/archive"
	"github.com/edgechat/edgechat/services/media/store/storetest"
)

// Every node of a cluster must keep sealed segments in the same store
// (docs/operations.md, Archive tiers). A node whose store differs (local
// where the leader's is S3, S3 where it is local, another bucket) read
// every segment sealed after it joined from where it was not: its
// history over sealed messages failed with 500 for good. A node that
// would join so is refused, naming both settings.
func TestANodeWithAnotherArchiveStoreCannotJoin(t *testing.T) {
	m := storetest.StartMinIO(t)
	s3 := func(bucket string) nodetest.Option {
		return func(c *node.Config) {
			withMinIO(m, "n")(c)
			c.ArchiveStore, c.S3ArchiveBucket = node.MediaStoreS3, bucket
		}
	}
	local := func(c *node.Config) {}
	for _, tc := range []struct {
		name             string
		first, joiner    nodetest.Option
		firstAs, joinsAs string
	}{
		{"local leader, S3 joiner", local, s3("archive-a"), "local", "s3 bucket archive-a"},
		{"S3 leader, local joiner", s3("archive-b"), local, "s3 bucket archive-b", "local"},
		{"two buckets", s3("archive-c"), s3("archive-d"), "s3 bucket archive-c", "s3 bucket archive-d"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			first := nodetest.StartNode(t, nodetest.WithConfig(func(c *node.Config) { c.NodeID = "n1" }), tc.first)
			cfg := nodetest.TestConfig(t)
			cfg.NodeID, cfg.Join = "n2", []string{first.ClusterAddr()}
			tc.joiner(&cfg)
			second, err := nodetest.Start(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
			if err != nil {
				t.Logf("refused: %v", err)
				for _, want := range []string{tc.firstAs, tc.joinsAs, "--archive-store"} {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("the refusal does not say %q: %v", want, err)
					}
				}
				return
			}
			t.Cleanup(func() { _ = second.Stop() })
			// It joined: what it serves once the leader sealed.
			f := writeTieringHistory(t, first)
			before := f.reads(t, first)
			checkFor(t, 10*time.Second, 50*time.Millisecond, func() error {
				if fmt.Sprint(f.reads(t, second)) != fmt.Sprint(before) {
					return fmt.Errorf("n2 has not applied everything yet")
				}
				return nil
			})
			st, err := first.Archive.SealOnce(context.Background(), archive.SealConfig{MaxMessages: 40, HotAge: time.Millisecond}, time.Now())
			if err != nil || st.Segments == 0 {
				t.Fatalf("seal: %+v %v", st, err)
			}
			checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
				s, err := second.Archive.Status()
				if err != nil || s.SealedSegments != st.Segments {
					return fmt.Errorf("n2: %+v %v", s, err)
				}
				return nil
			})
			t.Logf("n2 (%s) joined n1 (%s) and n1 sealed", tc.joinsAs, tc.firstAs)
			sameReads(t, "n1", before, f.reads(t, first))
			sameReads(t, "n2", before, f.reads(t, second))
			t.Errorf("n2 joined with another archive store (%s, n1: %s)", tc.joinsAs, tc.firstAs)
		})
	}
}

// A member restarted with another archive store is refused by its data
// directory, or, when that does not say, by the leader it asks to
// confirm it; one that nothing checked (it was elected
// itself, or it joined under a leader of an earlier version: here its
// join says nothing of its store) is found by the leader before it
// seals: it seals nothing while the member differs, and says why; the
// member's history stays readable (hot).
func TestTheLeaderDoesNotSealWhileAMemberKeepsSegmentsElsewhere(t *testing.T) {
	m := storetest.StartMinIO(t)
	nodes := nodetest.StartCluster(t, 3)
	f := writeTieringHistory(t, nodes[0])
	before := f.reads(t, nodes[0])
	old := nodes[2]
	if err := old.Stop(); err != nil {
		t.Fatal(err)
	}
	elsewhere := func(c *node.Config) {
		c.NodeID, c.ClusterAddr, c.DataDir = old.Config.NodeID, old.ClusterAddr(), old.Config.DataDir
		withMinIO(m, "n3")(c)
		c.ArchiveStore, c.S3ArchiveBucket = node.MediaStoreS3, "elsewhere"
	}
	cfg := nodetest.TestConfig(t)
	elsewhere(&cfg)
	if n, err := nodetest.Start(cfg, slog.New(slog.NewTextHandler(io.Discard, nil))); err == nil {
		_ = n.Stop()
		t.Errorf("n3 restarted with another archive store")
	} else if !strings.Contains(err.Error(), "this node kept sealed message segments in local, and is started with s3 bucket elsewhere") {
		t.Errorf("n3's restart: %v", err)
	}
	// Its data directory does not say (one of an earlier version), and
	// it asks the leader: refused.
	if err := os.Remove(filepath.Join(old.Config.DataDir, "archive-store")); err != nil {
		t.Fatal(err)
	}
	if n, err := nodetest.Start(cfg, slog.New(slog.NewTextHandler(io.Discard, nil))); err == nil {
		_ = n.Stop()
		t.Errorf("n3 restarted with another archive store")
	} else if !strings.Contains(err.Error(), "n3 keeps sealed message segments in s3 bucket elsewhere, the cluster (its leader n") {
		t.Errorf("n3's restart: %v", err)
	}
	// The refused start did not write its store down.
	if _, err := os.Stat(filepath.Join(old.Config.DataDir, "archive-store")); !os.IsNotExist(err) {
		t.Errorf("after the refused start, archive-store: %v", err)
	}
	moved := nodetest.StartNode(t, nodetest.WithConfig(elsewhere), nodetest.WithConfig(func(c *node.Config) {
		c.RaftTuning = func(rc *cluster.Config) { rc.ArchiveStore = "" }
	}))
	checkFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		if fmt.Sprint(f.reads(t, moved)) != fmt.Sprint(before) {
			return fmt.Errorf("n3 has not applied everything yet")
		}
		return nil
	})
	leader := nodes[0]
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		for _, n := range nodes[:2] {
			if n.IsLeader() {
				leader = n
				return nil
			}
		}
		return fmt.Errorf("no leader among n1, n2")
	})
	st, err := leader.Archive.SealOnce(context.Background(), archive.SealConfig{MaxMessages: 40, HotAge: time.Millisecond}, time.Now())
	t.Logf("the leader's seal: %+v %v", st, err)
	if !errors.Is(err, archive.ErrStoreMismatch) || st.Segments != 0 {
		t.Errorf("the leader sealed while n3 keeps segments elsewhere: %+v %v", st, err)
	}
	if err != nil {
		for _, want := range []string{"n3 keeps them in s3 bucket elsewhere", "in local", "--archive-store"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("the error does not say %q: %v", want, err)
			}
		}
	}
	if st.Segments > 0 {
		checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
			s, err := moved.Archive.Status()
			if err != nil || s.SealedSegments != st.Segments {
				return fmt.Errorf("n3: %+v %v", s, err)
			}
			return nil
		})
	}
	for _, n := range []*nodetest.Node{nodes[0], nodes[1], moved} {
		sameReads(t, n.Config.NodeID, before, f.reads(t, n))
	}
}

// A leader configured apart (here n1 on S3, its members local) does not
// refuse a joiner that agrees with the other members: the refusal would
// stop every rightly configured node that restarts under it. Its own
// sealing stops and names the members that differ.
func TestALeaderWithTheOddArchiveStoreDoesNotRefuseTheOthers(t *testing.T) {
	m := storetest.StartMinIO(t)
	n1 := nodetest.StartNode(t, withMinIO(m, "n1"), nodetest.WithConfig(func(c *node.Config) {
		c.NodeID, c.ArchiveStore, c.S3ArchiveBucket = "n1", node.MediaStoreS3, "odd"
	}))
	join := func(id string, unchecked bool) nodetest.Option {
		return func(c *node.Config) {
			c.NodeID, c.Join = id, []string{n1.ClusterAddr()}
			if unchecked { // as under a leader of an earlier version
				c.RaftTuning = func(rc *cluster.Config) { rc.ArchiveStore = "" }
			}
		}
	}
	nodetest.StartNode(t, join("n2", true))
	cfg := nodetest.TestConfig(t)
	join("n3", false)(&cfg)
	n3, err := nodetest.Start(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatalf("n3 (local, as n2) was refused by n1 (s3): %v", err)
	}
	t.Cleanup(func() { _ = n3.Stop() })
	f := writeTieringHistory(t, n1)
	st, err := n1.Archive.SealOnce(context.Background(), archive.SealConfig{MaxMessages: 40, HotAge: time.Millisecond}, time.Now())
	if !errors.Is(err, archive.ErrStoreMismatch) || st.Segments != 0 {
		t.Fatalf("n1 sealed: %+v %v", st, err)
	}
	for _, want := range []string{"n2 keeps them in local", "n3 keeps them in local"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error does not say %q: %v", want, err)
		}
	}
	before := f.reads(t, n1)
	checkFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		if fmt.Sprint(f.reads(t, n3)) != fmt.Sprint(before) {
			return fmt.Errorf("n3 does not read what n1 reads (yet)")
		}
		return nil
	})
}

// A lone node restarted on another archive store asks nobody: it
// started, and every read of the segments it had sealed answered 500.
// Its data directory remembers the store it was used with.
func TestANodeRestartedOnAnotherArchiveStoreIsRefused(t *testing.T) {
	m := storetest.StartMinIO(t)
	n := nodetest.StartNode(t)
	f := writeTieringHistory(t, n)
	before := f.reads(t, n)
	if st, err := n.Archive.SealOnce(context.Background(), archive.SealConfig{MaxMessages: 40, HotAge: time.Millisecond}, time.Now()); err != nil || st.Segments == 0 {
		t.Fatalf("seal: %+v %v", st, err)
	}
	if err := n.Stop(); err != nil {
		t.Fatal(err)
	}
	cfg := nodetest.TestConfig(t)
	cfg.DataDir = n.Config.DataDir
	withMinIO(m, "n1")(&cfg)
	cfg.ArchiveStore, cfg.S3ArchiveBucket = node.MediaStoreS3, "switched"
	if s3, err := nodetest.Start(cfg, slog.New(slog.NewTextHandler(io.Discard, nil))); err == nil {
		defer func() { _ = s3.Stop() }()
		t.Errorf("the node restarted on S3 over a local store's segments")
		sameReads(t, "restarted on S3", before, f.reads(t, s3))
		return
	} else {
		t.Logf("refused: %v", err)
		for _, want := range []string{"kept sealed message segments in local", "started with s3 bucket switched", "archive-store"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("the refusal does not say %q: %v", want, err)
			}
		}
	}
	again := nodetest.StartNode(t, nodetest.WithDataDir(n.Config.DataDir))
	sameReads(t, "restarted as before", before, f.reads(t, again))
}
