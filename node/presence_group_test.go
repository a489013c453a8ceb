package node_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgechat/edgechat/internal/testutil/mqtttest"
	"github.com/edgechat/edgechat/node/nodetest"
)

// lastPresence is the status of the last presence/{uid} message c got
// ("" for none).
func lastPresence(c *mqtttest.Client, uid string) string {
	got := c.Received("presence/" + uid)
	if len(got) == 0 {
		return ""
	}
	var p struct{ Status string }
	_ = json.Unmarshal(got[len(got)-1].Payload, &p)
	return p.Status
}

func waitLastPresence(t *testing.T, c *mqtttest.Client, uid, want, why string) {
	t.Helper()
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if s := lastPresence(c, uid); s != want {
			return fmt.Errorf("%s: the watcher's last presence/%s is %q, want %q (the status now)", why, uid, s, want)
		}
		return nil
	})
}

// A watcher whose subscription to presence/{uid} was granted while he
// shared a group with uid keeps it when he leaves the group or is removed
// from it (its deliveries are refused while no rule lets him see uid).
// When a group membership lets him see uid again (he, or uid, is added
// back; a new group has both), the last status his client got must not
// be one uid left meanwhile: protocol.md says the last presence/{uid} a
// client got is the current one, and hands it when a block is lifted or a
// contact added back. The changes are made through one node of three,
// the watcher and uid are connected to the other two: each node hands
// its own sessions the status.
func TestPresenceWatcherWhoSharesAGroupAgainDoesNotKeepAStaleStatus(t *testing.T) {
	nodes := nodetest.StartCluster(t, 3)
	n0, n1, n2 := nodes[0], nodes[1], nodes[2]
	aliceTok, bobTok, carolTok := n0.NewUser(t, "alice"), n0.NewUser(t, "bob"), n0.NewUser(t, "carol")
	g := createGroup(t, n0, carolTok, "team", "alice", "bob")
	members := "/user/groups/" + g.GroupID + "/members"
	must := func(st int, want int, what string) {
		t.Helper()
		if st != want {
			t.Fatalf("%s: %d, want %d", what, st, want)
		}
	}

	bob := mustConnectV5(t, n2.MQTTURL, "bob", "phone", bobTok)
	bob.MustSub(t, "presence/alice")
	alice := mustConnectV5(t, n1.MQTTURL, "alice", "phone", aliceTok)
	alice.Pub(t, "presence/alice/heartbeat", 0, "")
	waitLastPresence(t, bob, "alice", "online", "co-members")

	// The watcher is removed, uid leaves meanwhile, the watcher is added
	// back.
	must(api(t, n0, carolTok, "DELETE", members+"/bob", nil, nil), 204, "carol removes bob")
	_ = alice.Disconnect(&paho.Disconnect{})
	aliceWaits(t, n0, aliceTok, "offline")
	must(api(t, n0, carolTok, "POST", members, map[string]string{"uid": "bob"}, nil), 200, "carol adds bob back")
	waitLastPresence(t, bob, "alice", "offline", "bob added back")

	// uid is removed, comes back meanwhile, and is added back.
	must(api(t, n0, carolTok, "DELETE", members+"/alice", nil, nil), 204, "carol removes alice")
	alice = mustConnectV5(t, n1.MQTTURL, "alice", "laptop", aliceTok)
	alice.Pub(t, "presence/alice/heartbeat", 0, "")
	aliceWaits(t, n0, aliceTok, "online")
	must(api(t, n0, carolTok, "POST", members, map[string]string{"uid": "alice"}, nil), 200, "carol adds alice back")
	waitLastPresence(t, bob, "alice", "online", "alice added back")

	// The watcher leaves, uid leaves meanwhile, a new group has both.
	must(api(t, n0, bobTok, "DELETE", members+"/bob", nil, nil), 204, "bob leaves")
	_ = alice.Disconnect(&paho.Disconnect{})
	aliceWaits(t, n0, aliceTok, "offline")
	createGroup(t, n0, carolTok, "two", "alice", "bob")
	waitLastPresence(t, bob, "alice", "offline", "a new group with both")
}
