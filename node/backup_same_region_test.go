package node_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
	"github.com/edgechat/edgechat/services/backup"
	"github.com/edgechat/edgechat/services/media/store/storetest"
)

// TestTwoClustersOfOneRegionOnOneBackupStore: clusters with the same
// region name (a staging cluster beside production, both with the
// default region, or two copies of one configuration) given the same
// --backup-to, on a real MinIO. Each took the other's backups for its
// own: its prune deleted the other's, and one with a longer interval
// took none while another went on. Now each counts and prunes only its
// cluster's (the manifest's cluster ID); a restore still lists and
// reads every backup of the place.
func TestTwoClustersOfOneRegionOnOneBackupStore(t *testing.T) {
	m := storetest.StartMinIO(t)
	const place = "s3://edgechat-backups/shared"
	start := func(prefix string, every time.Duration) *nodetest.Node {
		return nodetest.StartNode(t, withMinIO(m, prefix), nodetest.WithConfig(func(c *node.Config) {
			c.Region, c.BackupEvery, c.BackupTo, c.BackupKeep = "eu", every, place, 1
		}))
	}
	var st backup.Store
	// ownBackup waits for n's scheduler to have taken a backup of its
	// own, and answers its manifest.
	ownBackup := func(n *nodetest.Node, name string) *backup.Manifest {
		t.Helper()
		var man *backup.Manifest
		nodetest.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
			s := n.Backup.Scheduler().Status()
			if s.LastAttempt.IsZero() {
				return fmt.Errorf("%s took no backup of its own: its status names %q as its last", name, s.LastID)
			}
			var err error
			if man, err = backup.Verify(t.Context(), st, s.LastID, nil); err != nil {
				return fmt.Errorf("%s's newest %q: %v", name, s.LastID, err)
			}
			return nil
		})
		return man
	}
	hourly := start("one", time.Hour)
	var err error
	if st, err = backup.OpenStore(t.Context(), place, hourly.Config.BackupS3()); err != nil {
		t.Fatal(err)
	}
	hMan := ownBackup(hourly, "the hourly cluster")

	often := start("two", time.Second)
	// It takes three: the prune after the second has run once the third
	// is taken (one tick at a time).
	var oMan *backup.Manifest
	for range 3 {
		last := often.Backup.Scheduler().Status().LastID
		nodetest.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
			if s := often.Backup.Scheduler().Status(); s.LastID <= last {
				return fmt.Errorf("the second cluster's newest is still %q", s.LastID)
			}
			return nil
		})
	}
	oMan = ownBackup(often, "the second cluster")
	if _, err := backup.Verify(t.Context(), st, hMan.ID, nil); err != nil {
		t.Errorf("the hourly cluster's backup %s after the second cluster's prunes (--backup-keep 1): %v", hMan.ID, err)
	}

	// A third one, hourly too, started while the second goes on: its
	// first backup is due at once.
	third := start("three", time.Hour)
	tMan := ownBackup(third, "the third cluster")

	ids := map[string]bool{hMan.Cluster: true, oMan.Cluster: true, tMan.Cluster: true}
	if len(ids) != 3 || ids[""] {
		t.Errorf("manifests name clusters %q, %q and %q: want three IDs", hMan.Cluster, oMan.Cluster, tMan.Cluster)
	}
	// Restore still reads the place whole: the newest of any cluster.
	if id, err := backup.Latest(t.Context(), st); err != nil || id < tMan.ID {
		t.Errorf("Latest of the shared place: %q %v, want %s or newer", id, err, tMan.ID)
	}
}
