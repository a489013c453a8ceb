package node_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
	"github.com/edgechat/edgechat/services/backup"
)

// TestTwoRegionsOnOneBackupStore: the clusters of two regions run with
// one configuration, so with one --backup-to. Each read the other's
// newest backup as its own last one: region us (every hour) took none
// while eu (every second) went on, and each region's prune counted and
// deleted the other's. Now each counts and prunes only its region's.
func TestTwoRegionsOnOneBackupStore(t *testing.T) {
	store := t.TempDir()
	eu := nodetest.StartNode(t, nodetest.WithConfig(func(c *node.Config) {
		c.Region, c.BackupEvery, c.BackupTo, c.BackupKeep = "eu", time.Second, store, 1
	}))
	nodetest.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		if _, ok := eu.Backup.Scheduler().LastBackup(); !ok {
			return fmt.Errorf("eu took no backup yet")
		}
		return nil
	})
	us := nodetest.StartNode(t, nodetest.WithConfig(func(c *node.Config) {
		c.Region, c.BackupEvery, c.BackupTo, c.BackupKeep = "us", time.Hour, store, 1
	}))
	ds, err := backup.NewDirStore(store)
	if err != nil {
		t.Fatal(err)
	}
	var usID string
	nodetest.CheckFor(t, 10*time.Second, 100*time.Millisecond, func() error {
		st := us.Backup.Scheduler().Status()
		if st.LastAttempt.IsZero() {
			return fmt.Errorf("region us took no backup of its own: its status names %s (eu's) as its last", st.LastID)
		}
		if m, err := backup.Verify(t.Context(), ds, st.LastID, nil); err != nil || m.Region != "us" {
			return fmt.Errorf("us's newest %q: %v", st.LastID, err)
		}
		usID = st.LastID
		return nil
	})
	// eu takes two more: the prune after the first has run once the
	// second is taken (one tick at a time); us's backup stays.
	for range 2 {
		last := eu.Backup.Scheduler().Status().LastID
		nodetest.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
			if st := eu.Backup.Scheduler().Status(); st.LastID <= last {
				return fmt.Errorf("eu's newest is still %s", st.LastID)
			}
			return nil
		})
	}
	if _, err := backup.Verify(t.Context(), ds, usID, nil); err != nil {
		t.Fatalf("region us's backup after eu's prunes: %v", err)
	}
}
