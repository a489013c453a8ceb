package node_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/edgechat/edgechat/node/nodetest"
)

// `cluster remove NODE` commits the Raft removal first and drops NODE's
// routes and client registry entries after. When the drop fails after the
// removal committed (here the removed node is the leader that took the
// request: its Raft shuts down once it removed itself), the operator's
// retry on another member answers 404 and must still drop them. Before:
// the 404 dropped nothing, so the registry kept naming the gone node for
// its client IDs and its routes stayed in the table for good.
func TestARemovalRetriedAfterItCommittedDropsTheNodesRoutesAndClients(t *testing.T) {
	nodes := nodetest.StartCluster(t, 3)
	var leader *nodetest.Node
	var others []*nodetest.Node
	for _, n := range nodes {
		if n.IsLeader() {
			leader = n
		} else {
			others = append(others, n)
		}
	}
	if leader == nil {
		t.Fatal("no leader")
	}
	adminTok := nodes[0].NewUser(t, "root")
	aliceTok := nodes[0].NewUser(t, "alice")
	name := leader.Config.NodeID
	alice := mustConnectV5(t, leader.MQTTURL, "alice", "phone", aliceTok)
	alice.Sub(t, "user/alice/#")
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if lookupOn(t, others[0], "alice/phone") != name || !others[0].Broker.RouteTable().Has(name, "user/alice/#") {
			return errors.New("not registered yet")
		}
		return nil
	})

	st := api(t, leader, adminTok, "DELETE", "/cluster/nodes/"+name, nil, nil)
	t.Logf("DELETE /cluster/nodes/%s on itself: %d", name, st)
	if st != 204 {
		// The operator retries against another member until it is done
		// (a new leader is being elected meanwhile).
		checkFor(t, 20*time.Second, 100*time.Millisecond, func() error {
			st = api(t, others[0], adminTok, "DELETE", "/cluster/nodes/"+name, nil, nil)
			if st != 204 && st != 404 {
				return fmt.Errorf("retry on %s: %d", others[0].Config.NodeID, st)
			}
			return nil
		})
		t.Logf("retry on %s: %d", others[0].Config.NodeID, st)
	}
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		for _, n := range others {
			var status struct{ Members []struct{ Name string } }
			api(t, n, adminTok, "GET", "/cluster/status", nil, &status)
			for _, m := range status.Members {
				if m.Name == name {
					return fmt.Errorf("%s still a member on %s", name, n.Config.NodeID)
				}
			}
			if got := lookupOn(t, n, "alice/phone"); got == name {
				return fmt.Errorf("registry on %s still names the removed %s for alice/phone", n.Config.NodeID, name)
			}
			if f := n.Broker.RouteTable().Filters(name); len(f) > 0 {
				return fmt.Errorf("routes of the removed %s still in %s's table: %v", name, n.Config.NodeID, f)
			}
		}
		return nil
	})
}
