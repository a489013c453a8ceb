package cluster

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/testutil"
)

// A lone voter does not sit out a heartbeat timeout waiting for a leader
// that cannot exist (quickstart.go): with a 30 s timeout it would lead
// after 30–60 s; it leads at once, and then runs with the configured
// timeouts. A restart with its state does the same.
func TestLoneVoterElectsItselfAtOnce(t *testing.T) {
	dir := t.TempDir()
	slow := func(c *Config) {
		c.HeartbeatTimeout = 30 * time.Second
		c.ElectionTimeout = 30 * time.Second
		c.LeaderLeaseTimeout = 100 * time.Millisecond
	}
	for _, boot := range []bool{true, false} { // a new cluster, then a restart
		n := startNode(t, nodeOpts{dataDir: dir, dbDir: filepath.Join(dir, "badger"), bootstrap: boot, tweak: slow})
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second) // half the heartbeat timeout
		err := n.WaitReady(ctx)
		cancel()
		if err != nil {
			t.Fatalf("bootstrap=%v: not ready within half a heartbeat timeout: %v", boot, err)
		}
		testutil.CheckFor(t, 10*time.Second, time.Millisecond, func() error {
			if rc := n.raft.ReloadableConfig(); rc.HeartbeatTimeout != 30*time.Second || rc.ElectionTimeout != 30*time.Second {
				return fmt.Errorf("bootstrap=%v: leading with timeouts %v/%v, want the configured 30s/30s", boot, rc.HeartbeatTimeout, rc.ElectionTimeout)
			}
			return nil
		})
		n.stop(t)
	}
}
