package node_test

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/edgechat/edgechat/node/nodetest"
)

// A node that crashed is removed from its cluster by an operator
// (DELETE /cluster/nodes/{name}, what `edgechat cluster remove` calls):
// the routes and client registry entries it had are dropped on every
// node that remains (LESSONS 5: a removed node's subscriptions must not
// keep attracting forwards, its clients must not be "taken over" on a
// dead node), and its users reconnect elsewhere and get their messages.
func TestRemovingACrashedNodeDropsItsRoutesAndClients(t *testing.T) {
	nodes := nodetest.StartCluster(t, 3)
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	root := n1.NewUser(t, "root") // the first account is the admin
	aliceTok, bobTok := n1.NewUser(t, "alice"), n1.NewUser(t, "bob")
	bob := mustConnectV5(t, n3.MQTTURL, "bob", "phone", bobTok)
	bob.MustSub(t, "user/bob/#")
	held := func(n *nodetest.Node) error {
		clients, err := n.Broker.Registry().Clients("n3")
		if err != nil {
			return err
		}
		if len(n.Broker.RouteTable().Filters("n3")) == 0 || !slices.Contains(clients, "bob/phone") {
			return fmt.Errorf("%s: n3's routes %v, clients %v", n.HTTPURL, n.Broker.RouteTable().Filters("n3"), clients)
		}
		return nil
	}
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error { return errors.Join(held(n1), held(n2)) })

	if err := n3.Stop(); err != nil { // gone without leaving
		t.Fatal(err)
	}
	if st := api(t, n1, bobTok, "DELETE", "/cluster/nodes/n3", nil, nil); st != http.StatusForbidden {
		t.Fatalf("removal by a user: %d, want 403", st)
	}
	checkFor(t, 20*time.Second, 100*time.Millisecond, func() error {
		if st := api(t, n1, root, "DELETE", "/cluster/nodes/n3", nil, nil); st/100 != 2 {
			return fmt.Errorf("removal: %d", st)
		}
		return nil
	})
	for _, n := range []*nodetest.Node{n1, n2} {
		checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
			clients, err := n.Broker.Registry().Clients("n3")
			if err != nil {
				return err
			}
			if f := n.Broker.RouteTable().Filters("n3"); len(f) > 0 || len(clients) > 0 {
				return fmt.Errorf("%s still holds n3's routes %v and clients %v", n.HTTPURL, f, clients)
			}
			return nil
		})
	}

	// bob's phone reconnects to n2 and gets alice's next message live.
	bob2 := mustConnectV5(t, n2.MQTTURL, "bob", "phone", bobTok)
	bob2.MustSub(t, "user/bob/#")
	if st := api(t, n1, aliceTok, "POST", "/chat/messages", map[string]string{"to": "bob", "cid": "after-removal", "type": "text", "body": "still there?"}, nil); st != 201 {
		t.Fatalf("send: %d", st)
	}
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if len(bob2.Received("user/bob/newMessage")) != 1 {
			return errors.New("bob has not received the message on n2")
		}
		return nil
	})
}

// DELETE /cluster/nodes/{name} of the only voter answers 409, as
// documented ("the last voter"). Before: 503 "the change may still
// commit" (Raft refuses the empty configuration), telling the operator to
// retry what can never succeed.
func TestRemovingTheLastVoterIs409(t *testing.T) {
	n1 := nodetest.StartCluster(t, 1)[0]
	adminTok := n1.NewUser(t, "root")
	var body map[string]any
	if st := api(t, n1, adminTok, "DELETE", "/cluster/nodes/n1", nil, &body); st != http.StatusConflict {
		t.Fatalf("removing the last voter: %d %v, want 409", st, body)
	}
	if !n1.IsLeader() {
		t.Fatal("n1 is no longer the leader of its one-node cluster")
	}
}
