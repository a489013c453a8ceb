package node_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
	"github.com/edgechat/edgechat/services/archive"
)

// A node that lacks segment files (it installed a snapshot) copies them
// from its peers over their HTTP API (GET /admin/archive/segments/{key},
// with an admin token of the user "operator" it signs). With the
// gateway's rate limits on, as in production, those copies count against
// the peer's admin class (5/s, burst 10, one bucket for every node's
// "operator") and its per-IP bucket: a backup from such a node needing
// more segments than that failed with the peers' 429s instead of waiting
// them out, so a cluster whose leader had joined by snapshot could not
// take its scheduled backups. Waiting them out, a node copied about 5
// segments a second past the burst and drained its address's bucket on
// its peers, which its media reads through them share: the copies are
// the node's own requests (from a member's address, naming it), which the
// peers no longer limit at all.
func TestBackupCopiesManySegmentsFromRateLimitedPeers(t *testing.T) {
	nodes := nodetest.StartCluster(t, 3, nodetest.WithConfig(func(c *node.Config) { c.NoRateLimits = false }))
	first := nodes[0]
	alice, bob := first.NewUser(t, "alice"), first.NewUser(t, "bob")
	ca := mustConnectV5(t, first.MQTTURL, "alice", "phone", alice)
	for i := range 90 {
		if code, _ := ca.Pub(t, "user/bob/newMessage", 1, textMsg(fmt.Sprintf("ab%d", i), "hello")); code != 0 {
			t.Fatalf("PUBACK %#x", code)
		}
	}
	leader := first
	for _, n := range nodes {
		if n.IsLeader() {
			leader = n
		}
	}
	for _, n := range nodes {
		checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
			var p historyPage
			if code := api(t, n, bob, "GET", "/chat/history?with=alice&limit=1", nil, &p); code != 200 || len(p.Messages) != 1 || p.Messages[0].CID != "ab89" {
				return fmt.Errorf("%s behind", n.Config.NodeID)
			}
			return nil
		})
	}
	st, err := leader.Archive.SealOnce(context.Background(), archive.SealConfig{MaxMessages: 3, HotAge: time.Millisecond}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if st.Segments < 25 {
		t.Fatalf("sealed %+v: want at least 25 segments (more than two peers' bursts)", st)
	}
	for _, n := range nodes {
		checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
			s, err := n.Archive.Status()
			if err != nil {
				return err
			}
			if s.SealedSegments != st.Segments {
				return fmt.Errorf("%s: %+v", n.Config.NodeID, s)
			}
			return nil
		})
	}
	lost := nodes[2]
	if lost == leader {
		lost = nodes[1]
	}
	if err := os.RemoveAll(filepath.Join(lost.Config.DataDir, "archive", "d")); err != nil {
		t.Fatal(err)
	}
	segs, last := streamBackupFrom(t, lost, alice) // the first account: an admin
	if last != "manifest.json" || segs != st.Segments {
		t.Fatalf("stream ended with %q after %d of %d segments", last, segs, st.Segments)
	}
	for _, n := range nodes {
		if n == lost {
			continue
		}
		for _, l := range []map[string]string{{"class": "all", "scope": "ip"}, {"class": "admin", "scope": "user"}} {
			if v, _ := testutil.MetricValue(t, n.Registry(), "edgechat_http_rate_limited_total", l); v != 0 {
				t.Errorf("%s refused %v of %s's segment copies 429 (%s bucket)", n.Config.NodeID, v, lost.Config.NodeID, l["class"])
			}
		}
	}
}
