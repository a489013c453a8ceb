package node_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
	"github.com/edgechat/edgechat/services/backup"
)

// TestScheduledBackupsGoOnAfterALeaderChange: the leader takes the
// scheduled backups, a follower none; once the leader is stopped the new
// leader takes them into the same store, and the store keeps
// --backup-keep complete ones.
func TestScheduledBackupsGoOnAfterALeaderChange(t *testing.T) {
	store := t.TempDir()
	nodes := nodetest.StartCluster(t, 3, nodetest.WithConfig(func(c *node.Config) {
		c.BackupEvery, c.BackupTo, c.BackupKeep = time.Second, store, 2
	}))
	ds, err := backup.NewDirStore(store)
	if err != nil {
		t.Fatal(err)
	}
	newest := func() (*backup.Manifest, int, error) {
		ids, err := ds.IDs(t.Context())
		if err != nil {
			return nil, 0, err
		}
		var last *backup.Manifest
		n := 0
		for _, id := range ids {
			m, err := backup.Verify(t.Context(), ds, id, nil)
			if err != nil {
				continue // being written, or being pruned
			}
			n++
			if last == nil || m.ID > last.ID {
				last = m
			}
		}
		return last, n, nil
	}
	leader := func() *nodetest.Node {
		for _, n := range nodes {
			if n.IsLeader() {
				return n
			}
		}
		return nil
	}
	var first *nodetest.Node
	nodetest.CheckFor(t, 20*time.Second, 100*time.Millisecond, func() error {
		first = leader()
		m, _, err := newest()
		if err != nil || m == nil || first == nil || m.Node != first.Config.NodeID {
			return fmt.Errorf("newest backup %+v (leader %v): %v", m, first != nil, err)
		}
		return nil
	})
	for _, n := range nodes {
		if n != first {
			if v := n.Backup.Scheduler().Status(); !v.LastAttempt.IsZero() {
				t.Fatalf("follower %s attempted a backup at %v", n.Config.NodeID, v.LastAttempt)
			}
		}
	}
	if err := first.Stop(); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	nodetest.CheckFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		l := leader()
		m, n, err := newest()
		switch {
		case err != nil:
			return err
		case l == nil || l == first:
			return fmt.Errorf("no new leader")
		case m == nil || m.Node != l.Config.NodeID || m.Created.Before(stopped):
			return fmt.Errorf("newest backup %+v, new leader %s", m, l.Config.NodeID)
		case n > 3:
			return fmt.Errorf("%d complete backups in the store, keep 2", n)
		}
		return nil
	})
	for _, n := range nodes {
		if n == first {
			continue
		}
		if v := n.Backup.Scheduler().Status(); v.LastError != "" {
			t.Fatalf("%s: %s", n.Config.NodeID, v.LastError)
		}
	}
}
