package node_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/edgechat/edgechat/node/nodetest"
)

// A node that left its cluster (`edgechat cluster leave`) and is started
// again on its data directory without --join (a service manager that
// restarts it, an operator who forgot the leave) is no longer a member:
// no majority will ever come, and --join brings it back. Before, it said
// "waiting for the cluster: no leader yet (a majority of the members must
// be up and reach each other)" every 15 s for ever, and /readyz "no Raft
// leader reachable", both while the rest of the cluster ran fine, sending
// the operator after a network or quorum problem that does not exist.
func TestANodeThatLeftSaysSoInsteadOfWaitingForAMajority(t *testing.T) {
	nodes := nodetest.StartCluster(t, 2)
	n1, n2 := nodes[0], nodes[1]
	root := n1.NewUser(t, "root")
	if st := api(t, n2, root, "POST", "/cluster/leave", nil, nil); st/100 != 2 {
		t.Fatalf("leave: %d", st)
	}
	notMember := "not a member of its cluster"
	nodetest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		var raw map[string]any
		st := api(t, n2, "", "GET", "/readyz", nil, &raw)
		if st != http.StatusServiceUnavailable || !strings.Contains(fmt.Sprint(raw), notMember) {
			return fmt.Errorf("/readyz of the node that left: %d %v, want 503 saying it is %s", st, raw, notMember)
		}
		return nil
	})
	dir := n2.Config.DataDir
	if err := n2.Stop(); err != nil {
		t.Fatal(err)
	}

	cfg := nodetest.TestConfig(t)
	cfg.NodeID, cfg.DataDir = "n2", dir
	cfg.StartWaitLogEvery = 20 * time.Millisecond
	_, logs := runLogged(t, cfg)
	nodetest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if !strings.Contains(logs.String(), "this node is "+notMember) {
			return fmt.Errorf("no line saying the node is %s in its log:\n%s", notMember, logs.String())
		}
		return nil
	})
	if strings.Contains(logs.String(), "no leader yet") {
		t.Errorf("the node that left says it waits for a majority:\n%s", logs.String())
	}
	if !n1.Ready() {
		t.Error("n1 is not ready")
	}
}
