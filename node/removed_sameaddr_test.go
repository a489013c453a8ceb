package node_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/edgechat/edgechat/node/nodetest"
)

// A member removed while it was down (`edgechat cluster remove` of a
// node taken for dead) and started again on its data directory at its
// address without --join (a service manager restarting it after the
// outage) does not disrupt the cluster, and says it is no longer a
// member, as one that left or saw its removal does. Before, its Raft
// state still named it a member, nobody told it otherwise, and it said
// "waiting for the cluster: no leader yet (a majority of the members must
// be up and reach each other)" for ever, and /readyz "node not ready",
// while the rest of the cluster ran fine: the operator was sent after a
// quorum problem that does not exist.
func TestAMemberRemovedWhileAwayRestartedAtItsAddressSaysSo(t *testing.T) {
	nodes := nodetest.StartCluster(t, 3)
	n1, n3 := nodes[0], nodes[2]
	root := n1.NewUser(t, "root")
	dir, addr := n3.Config.DataDir, n3.ClusterAddr()
	if err := n3.Stop(); err != nil {
		t.Fatal(err)
	}
	nodetest.CheckFor(t, 20*time.Second, 100*time.Millisecond, func() error {
		if st := api(t, n1, root, "DELETE", "/cluster/nodes/n3", nil, nil); st/100 != 2 {
			return fmt.Errorf("removal: %d", st)
		}
		return nil
	})
	var before struct {
		Term   uint64 `json:"term"`
		Leader string `json:"leader"`
	}
	if st := api(t, n1, root, "GET", "/cluster/status", nil, &before); st != http.StatusOK {
		t.Fatalf("/cluster/status: %d", st)
	}

	cfg := nodetest.TestConfig(t)
	cfg.NodeID, cfg.DataDir, cfg.ClusterAddr = "n3", dir, addr // its address, no Join
	cfg.StartWaitLogEvery = 20 * time.Millisecond
	back, logs := runLogged(t, cfg)
	notMember := "not a member of its cluster"
	backAPI := &nodetest.Node{Node: back, HTTPURL: back.HTTPURL()}
	nodetest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		var raw map[string]any
		st := api(t, backAPI, "", "GET", "/readyz", nil, &raw)
		if st != http.StatusServiceUnavailable || !strings.Contains(fmt.Sprint(raw), notMember) {
			return fmt.Errorf("/readyz of the removed n3: %d %v, want 503 saying it is %s", st, raw, notMember)
		}
		if !strings.Contains(logs.String(), "this node is "+notMember) {
			return fmt.Errorf("no line saying the node is %s in its log:\n%s", notMember, tail(logs.String(), 6))
		}
		return nil
	})
	var after struct {
		Term   uint64 `json:"term"`
		Leader string `json:"leader"`
	}
	if st := api(t, n1, root, "GET", "/cluster/status", nil, &after); st != http.StatusOK {
		t.Fatalf("/cluster/status: %d", st)
	}
	if after.Leader != before.Leader || after.Term != before.Term {
		t.Errorf("the removed n3 disrupted the cluster: leader %s term %d, before %s term %d",
			after.Leader, after.Term, before.Leader, before.Term)
	}
}

// tail is the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(len(lines)-n, 0):], "\n")
}
