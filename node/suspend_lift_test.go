package node_test

import (
	"net/http"
	"testing"

	"github.com/edgechat/edgechat/node/nodetest"
)

// A suspension lifted through the leader lets the user sign in at once
// through any node. A follower that had not applied the lift yet (a few
// milliseconds behind) answered the user's right password 403
// account_suspended, where every other refusal of a sign-in waits until
// the node has applied what the cluster committed: the admin tells the
// user "you can sign in again", and the load balancer picks a follower.
func TestLiftedSuspensionSignsInThroughEveryNodeAtOnce(t *testing.T) {
	nodes := nodetest.StartCluster(t, 3)
	var leader *nodetest.Node
	var followers []*nodetest.Node
	for _, n := range nodes {
		if n.IsLeader() && leader == nil {
			leader = n
		} else {
			followers = append(followers, n)
		}
	}
	if leader == nil {
		t.Skip("no leader among the nodes right now")
	}
	rootTok := leader.NewUser(t, "root") // the first account: an admin
	leader.NewUser(t, "bob")
	suspend := func(on bool) {
		t.Helper()
		if st := api(t, leader, rootTok, http.MethodPut, "/admin/users/bob/suspended", map[string]bool{"suspended": on}, nil); st != http.StatusOK {
			t.Fatalf("suspended=%v: %d", on, st)
		}
	}
	for round := 0; round < 5; round++ {
		suspend(true)
		suspend(false)
		for _, n := range followers {
			var e struct{ Error struct{ Code string } }
			if st := api(t, n, "", http.MethodPost, "/auth/login", map[string]string{"username": "bob", "password": nodetest.Password("bob")}, &e); st != http.StatusOK {
				t.Fatalf("round %d: bob's sign-in through %s right after the lift: %d %q", round, n.Config.NodeID, st, e.Error.Code)
			}
		}
	}
}
