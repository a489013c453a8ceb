package node_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/edgechat/edgechat/node/nodetest"
)

// A node stops (gracefully) with a user's only connection on it; the
// user's home is another node: the user goes offline after the grace.
func TestPresenceOfflineWhenTheNodeOfTheConnectionStops(t *testing.T) {
	nodes := nodetest.StartCluster(t, 3, nodetest.WithPresence(time.Minute, 300*time.Millisecond))
	n1, n3 := nodes[0], nodes[2]
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		for _, n := range nodes {
			if h := n.Presence.Home("x"); h != n1.Presence.Home("x") {
				return fmt.Errorf("%s thinks x's home is %s", n.Config.NodeID, h)
			}
		}
		return nil
	})
	var uid string
	for i := 0; uid == ""; i++ {
		if u := fmt.Sprintf("user%d", i); n1.Presence.Home(u) == "n2" {
			uid = u
		}
	}
	tok := n1.NewUser(t, uid)
	watchTok := n1.NewUser(t, "watcher")
	if st := api(t, n1, tok, "POST", "/user/me/contacts", map[string]string{"uid": "watcher"}, nil); st/100 != 2 {
		t.Fatalf("add contact: %d", st)
	}
	watcher := mustConnectV5(t, n3.MQTTURL, "watcher", "phone", watchTok)
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if r := watcher.Sub(t, "presence/"+uid); r[0] > 2 {
			return fmt.Errorf("watcher may not watch %s yet: %#x", uid, r[0])
		}
		return nil
	})
	mustConnectV5(t, n1.MQTTURL, uid, "phone", tok)
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if st := statuses(t, watcher, "presence/"+uid); len(st) == 0 || st[len(st)-1] != "online" {
			return fmt.Errorf("watcher saw %v", st)
		}
		return nil
	})
	if err := n1.Stop(); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if st := statuses(t, watcher, "presence/"+uid); st[len(st)-1] != "offline" {
			return fmt.Errorf("watcher saw %v after the node of the only connection stopped", st)
		}
		return nil
	})
}
