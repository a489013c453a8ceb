package node_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
)

// A `cluster leave` that is refused (the only voter: 409) changes
// nothing: the node keeps its routes and client registry entries and
// goes on adding and registering them, so that once the cluster grows,
// typing from another node reaches its subscribers and the same client
// ID connecting elsewhere takes its session over. Before: the routes and
// entries were dropped and the keepers' "leaving" flags stayed set.
func TestARefusedLeaveKeepsTheNodesRoutesAndSessions(t *testing.T) {
	n1 := nodetest.StartCluster(t, 1)[0]
	adminTok := n1.NewUser(t, "root")
	aliceTok, bobTok := n1.NewUser(t, "alice"), n1.NewUser(t, "bob")

	alice := mustConnectV5(t, n1.MQTTURL, "alice", "phone", aliceTok)
	alice.Sub(t, "user/alice/#")
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if !n1.Broker.RouteTable().Has("n1", "user/alice/#") || lookupOn(t, n1, "alice/phone") != "n1" {
			return errors.New("route or registry entry not yet committed")
		}
		return nil
	})

	if st := api(t, n1, adminTok, "POST", "/cluster/leave", nil, nil); st != 409 {
		t.Fatalf("leave of the last voter: %d, want 409", st)
	}
	if !n1.Broker.RouteTable().Has("n1", "user/alice/#") {
		t.Errorf("after a refused leave: n1's route of user/alice/# is gone")
	}
	if got := lookupOn(t, n1, "alice/phone"); got != "n1" {
		t.Errorf("after a refused leave: registry names %q for alice/phone, want n1", got)
	}

	// A device that connects after the refused leave is registered.
	tablet := mustConnectV5(t, n1.MQTTURL, "alice", "tablet", aliceTok)
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if got := lookupOn(t, n1, "alice/tablet"); got != "n1" {
			return fmt.Errorf("alice/tablet registered on %q, want n1", got)
		}
		return nil
	})

	// The cluster grows: typing from n2 reaches alice on n1.
	n2 := nodetest.StartNode(t, nodetest.WithConfig(func(c *node.Config) {
		c.NodeID = "n2"
		c.Join = []string{n1.ClusterAddr()}
	}))
	bob := mustConnectV5(t, n2.MQTTURL, "bob", "phone", bobTok)
	bob.Pub(t, "user/alice/typing", 1, `{"state":"typing"}`)
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if len(alice.Received("user/alice/typing")) == 0 {
			return fmt.Errorf("typing from bob on n2 has not reached alice on n1 (n1's routes on n2: %v)",
				n2.Broker.RouteTable().Filters("n1"))
		}
		return nil
	})

	// alice/tablet connects on n2: n1's connection is taken over.
	cur := mustConnectV5(t, n2.MQTTURL, "alice", "tablet", aliceTok)
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		select {
		case <-tablet.Done():
			return nil
		default:
			return fmt.Errorf("alice/tablet live on n1 and n2 at once (registry on n1 names %q)", lookupOn(t, n1, "alice/tablet"))
		}
	})
	select {
	case <-cur.Done():
		t.Fatal("the new connection on n2 was closed")
	default:
	}
}
