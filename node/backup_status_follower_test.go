package node_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
	"github.com/edgechat/edgechat/services/backup"
)

// TestBackupStatusOnAFollower: GET /admin/backup/status answers from any
// node (a monitor behind a load balancer reaches any): a follower tells
// the newest backup in the store, not only what it knew when it last
// led, and is not overdue while the leader's backups go on.
func TestBackupStatusOnAFollower(t *testing.T) {
	store := t.TempDir()
	nodes := nodetest.StartCluster(t, 3, nodetest.WithConfig(func(c *node.Config) {
		c.BackupEvery, c.BackupTo, c.BackupKeep = time.Second, store, 3
	}))
	root := nodes[0].NewUser(t, "root")
	type status struct {
		Scheduled bool
		Status    backup.Status
	}
	// Three intervals: a follower that never led and reads nothing is
	// overdue after two.
	time.Sleep(3500 * time.Millisecond)
	nodetest.CheckFor(t, 20*time.Second, 100*time.Millisecond, func() error {
		var bad []string
		for _, n := range nodes {
			var st status
			if code := api(t, n, root, "GET", "/admin/backup/status", nil, &st); code != 200 {
				return fmt.Errorf("%s: %d", n.Config.NodeID, code)
			}
			age := time.Since(st.Status.LastSuccess)
			if st.Status.LastID == "" || st.Status.Overdue || age > 3*time.Second {
				bad = append(bad, fmt.Sprintf("%s (leader %v): lastId %q, %.1fs old, overdue %v",
					n.Config.NodeID, n.IsLeader(), st.Status.LastID, age.Seconds(), st.Status.Overdue))
			}
		}
		if len(bad) > 0 {
			return fmt.Errorf("backup status:\n%s", strings.Join(bad, "\n"))
		}
		return nil
	})
}
