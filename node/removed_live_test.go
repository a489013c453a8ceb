package node_test

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/internal/testutil/delayproxy"
	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
)

// A node removed while it runs (`edgechat cluster remove` of a node that
// was not dead) closes its clients' connections, as one that left does:
// it no longer gets the log, and a client left on it would get nothing.
// Before, alice stayed connected to the removed n3 for good.
func TestClientsOfANodeRemovedWhileItRunsAreToldToMoveOn(t *testing.T) {
	nodes := nodetest.StartCluster(t, 3)
	n1, n3 := nodes[0], nodes[2]
	root := n1.NewUser(t, "root")
	aliceTok := n1.NewUser(t, "alice")
	alice := mustConnectV5(t, n3.MQTTURL, "alice", "phone", aliceTok)
	alice.Sub(t, "user/alice/#")
	if st := api(t, n1, root, "DELETE", "/cluster/nodes/n3", nil, nil); st != http.StatusNoContent {
		t.Fatalf("removal of n3: %d", st)
	}
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if reason, ok := alice.ServerDisconnect(); ok && reason == 0x89 {
			return nil
		}
		return errors.New("alice is still connected to n3, which was removed")
	})
}

// The same for a node removed while it was cut off from the leader (a
// partition, or an operator removing a node taken for dead): the leader
// could not send it the removal, so it asks the members whether it still
// is one while it hears no leader, and learns it. Before, it waited for a
// leader for ever ("no Raft leader reachable"), its clients connected.
// n3 is reached through a proxy (--advertise-cluster) that is cut: the
// others cannot reach it, it can reach them.
func TestANodeRemovedWhileCutOffLearnsIt(t *testing.T) {
	nodes := nodetest.StartCluster(t, 2)
	n1 := nodes[0]
	root := n1.NewUser(t, "root")
	aliceTok := n1.NewUser(t, "alice")

	n3, proxy, logs := joinBehindProxy(t, n1)
	n3API := &nodetest.Node{Node: n3, HTTPURL: n3.HTTPURL()}
	alice := mustConnectV5(t, "tcp://"+n3.MQTTAddr(), "alice", "phone", aliceTok)
	alice.Sub(t, "user/alice/#")

	proxy.SetCut(true)
	checkFor(t, 20*time.Second, 100*time.Millisecond, func() error {
		if st := api(t, n1, root, "DELETE", "/cluster/nodes/n3", nil, nil); st != http.StatusNoContent {
			return fmt.Errorf("removal of n3: %d", st)
		}
		return nil
	})
	notMember := "not a member of its cluster"
	checkFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		var raw map[string]any
		st := api(t, n3API, "", "GET", "/readyz", nil, &raw)
		if st != http.StatusServiceUnavailable || !strings.Contains(fmt.Sprint(raw), notMember) {
			return fmt.Errorf("/readyz of n3, removed while cut off: %d %v, want 503 saying it is %s", st, raw, notMember)
		}
		if reason, ok := alice.ServerDisconnect(); !ok || reason != 0x89 {
			return errors.New("alice is still connected to n3, which was removed")
		}
		return nil
	})
	if !strings.Contains(logs.String(), "removed from its cluster while it was cut off") {
		t.Errorf("n3's log does not say it was removed:\n%s", logs.String())
	}
}

// joinBehindProxy runs a node n3 that joins n1's cluster and that the
// others reach only through a proxy (--advertise-cluster): cutting the
// proxy cuts the others off from it while it can still reach them. It
// returns once n3 is ready, with its log.
func joinBehindProxy(t *testing.T, n1 *nodetest.Node) (*node.Node, *delayproxy.Proxy, *testutil.SyncBuffer) {
	t.Helper()
	return joinBehindProxyAs(t, n1, "n3")
}

// joinBehindProxyAs is joinBehindProxy for a node of another name, with
// opts applied to its configuration.
func joinBehindProxyAs(t *testing.T, n1 *nodetest.Node, name string, opts ...nodetest.Option) (*node.Node, *delayproxy.Proxy, *testutil.SyncBuffer) {
	t.Helper()
	cfg := nodetest.TestConfig(t)
	for _, o := range opts {
		o(&cfg)
	}
	cfg.NodeID = name
	proxy := nodetest.BehindProxy(t, &cfg)
	cfg.Join = []string{n1.ClusterAddr()}
	n, logs := runLogged(t, cfg)
	testutil.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		if !n.Ready() {
			return fmt.Errorf("%s not ready", name)
		}
		return nil
	})
	return n, proxy, logs
}
