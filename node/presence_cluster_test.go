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

// holdFor asserts that fn keeps returning nil, polling every `every`,
// for the whole window d (an observation window, not a wait).
func holdFor(t *testing.T, d, every time.Duration, fn func() error) {
	t.Helper()
	end := time.Now().Add(d)
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		if err := fn(); err != nil {
			t.Fatal(err)
		}
		if time.Now().After(end) {
			return
		}
		<-tick.C
	}
}

// statuses are the presence statuses c received on topic, in order.
func statuses(t *testing.T, c *mqtttest.Client, topic string) []string {
	t.Helper()
	var out []string
	for _, m := range c.Received(topic) {
		var p struct{ Status string }
		if err := json.Unmarshal(m.Payload, &p); err != nil {
			t.Fatalf("presence payload %q: %v", m.Payload, err)
		}
		out = append(out, p.Status)
	}
	return out
}

func httpStatus(t *testing.T, n *nodetest.Node, tok, uid string) string {
	t.Helper()
	var p struct{ Status string }
	if st := api(t, n, tok, "GET", "/presence/"+uid, nil, &p); st != 200 {
		t.Fatalf("GET /presence/%s on %s: %d", uid, n.Config.NodeID, st)
	}
	return p.Status
}

// Presence is one state per user for the whole cluster: a user with
// devices on two nodes stays online when one goes; a takeover of a client
// ID from n1 to n2 publishes no offline (watched from n3 and every other
// node); the last connection dropping publishes offline after the grace
// on every node; GET /presence/{uid} agrees on all nodes throughout.
func TestPresenceAcrossNodes(t *testing.T) {
	const grace = 300 * time.Millisecond
	// A long heartbeat interval: the devices send no heartbeats, and the
	// test is about connections, not heartbeat demotions.
	nodes := nodetest.StartCluster(t, 3, nodetest.WithPresence(time.Minute, grace))
	n1, n2 := nodes[0], nodes[1]
	aliceTok, bobTok := n1.NewUser(t, "alice"), n1.NewUser(t, "bob")
	if st := api(t, n1, aliceTok, "POST", "/user/me/contacts", map[string]string{"uid": "bob"}, nil); st/100 != 2 {
		t.Fatalf("add contact: %d", st)
	}
	// Every node's presence service reloads the members on its own
	// schedule: wait until they agree on alice's home.
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		for _, n := range nodes {
			if h := n.Presence.Home("alice"); h != n1.Presence.Home("alice") {
				return fmt.Errorf("%s thinks alice's home is %s, n1 %s", n.Config.NodeID, h, n1.Presence.Home("alice"))
			}
		}
		return nil
	})
	t.Logf("alice's home is %s", n1.Presence.Home("alice"))
	// bob watches alice's presence from every node (the one on n3 is the
	// "third node" of the takeover below).
	var watchers []*mqtttest.Client
	for i, n := range nodes {
		w := mustConnectV5(t, n.MQTTURL, "bob", fmt.Sprintf("w%d", i+1), bobTok)
		checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
			if r := w.Sub(t, "presence/alice"); r[0] > 2 {
				return fmt.Errorf("bob may not watch alice on %s yet: %#x", n.Config.NodeID, r[0])
			}
			return nil
		})
		watchers = append(watchers, w)
	}
	everywhere := func(want string) func() error {
		return func() error {
			for i, n := range nodes {
				if got := httpStatus(t, n, bobTok, "alice"); got != want {
					return fmt.Errorf("GET on %s: %q, want %q", n.Config.NodeID, got, want)
				}
				st := statuses(t, watchers[i], "presence/alice")
				if len(st) == 0 || st[len(st)-1] != want {
					return fmt.Errorf("watcher on %s saw %v, want last %q", n.Config.NodeID, st, want)
				}
			}
			return nil
		}
	}
	noOffline := func() error {
		if err := everywhere("online")(); err != nil {
			return err
		}
		for i, w := range watchers {
			for _, s := range statuses(t, w, "presence/alice") {
				if s != "online" {
					return fmt.Errorf("watcher on %s saw %q", nodes[i].Config.NodeID, s)
				}
			}
		}
		return nil
	}

	phone := mustConnectV5(t, n1.MQTTURL, "alice", "phone", aliceTok)
	laptop := mustConnectV5(t, n2.MQTTURL, "alice", "laptop", aliceTok)
	checkFor(t, 10*time.Second, 20*time.Millisecond, everywhere("online"))

	// Multi-device: the laptop on n2 goes; the phone on n1 keeps alice online.
	_ = laptop.Disconnect(&paho.Disconnect{})
	holdFor(t, 4*grace, 20*time.Millisecond, noOffline)

	// Takeover of alice/phone from n1 to n2: no offline anywhere.
	phone2 := mustConnectV5(t, n2.MQTTURL, "alice", "phone", aliceTok)
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		select {
		case <-phone.Done():
			return nil
		default:
			return fmt.Errorf("n1 still holds the old phone connection")
		}
	})
	holdFor(t, 4*grace, 20*time.Millisecond, noOffline)
	if n1.Broker.Connections() != 1 { // bob's watcher only
		t.Fatalf("n1 has %d connections", n1.Broker.Connections())
	}

	// The only connection left drops: offline after the grace, everywhere.
	_ = phone2.Disconnect(&paho.Disconnect{})
	checkFor(t, 10*time.Second, 20*time.Millisecond, everywhere("offline"))
	for i, w := range watchers {
		st := statuses(t, w, "presence/alice")
		for _, s := range st[:len(st)-1] {
			if s != "online" {
				t.Fatalf("watcher on %s saw %v", nodes[i].Config.NodeID, st)
			}
		}
	}
}

// When the home of a user leaves the cluster, the new home learns the
// user's connections from the other nodes and keeps them online without
// a flap; the user goes offline afterwards exactly when their connection
// drops.
func TestPresenceHomeLeaves(t *testing.T) {
	const grace = 300 * time.Millisecond
	nodes := nodetest.StartCluster(t, 3, nodetest.WithPresence(time.Minute, grace))
	adminTok := nodes[0].NewUser(t, "root")
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		for _, n := range nodes {
			if h := n.Presence.Home("x"); h != nodes[0].Presence.Home("x") {
				return fmt.Errorf("%s thinks x's home is %s", n.Config.NodeID, h)
			}
		}
		return nil
	})
	// Find a user whose home is not n1 (their device connects to n1).
	var uid string
	var home *nodetest.Node
	for i := 0; uid == ""; i++ {
		u := fmt.Sprintf("user%d", i)
		h := nodes[0].Presence.Home(u)
		if h == "n1" {
			continue
		}
		uid = u
		for _, n := range nodes {
			if n.Config.NodeID == h {
				home = n
			}
		}
	}
	tok := nodes[0].NewUser(t, uid)
	watchTok := nodes[0].NewUser(t, "watcher")
	if st := api(t, nodes[0], tok, "POST", "/user/me/contacts", map[string]string{"uid": "watcher"}, nil); st/100 != 2 {
		t.Fatalf("add contact: %d", st)
	}
	var rest []*nodetest.Node
	for _, n := range nodes {
		if n != home {
			rest = append(rest, n)
		}
	}
	watcher := mustConnectV5(t, rest[1].MQTTURL, "watcher", "phone", watchTok)
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if r := watcher.Sub(t, "presence/"+uid); r[0] > 2 {
			return fmt.Errorf("watcher may not watch %s yet: %#x", uid, r[0])
		}
		return nil
	})
	dev := mustConnectV5(t, nodes[0].MQTTURL, uid, "phone", tok)
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if st := statuses(t, watcher, "presence/"+uid); len(st) == 0 || st[len(st)-1] != "online" {
			return fmt.Errorf("watcher saw %v", st)
		}
		return nil
	})
	// The home leaves gracefully.
	if st := api(t, home, adminTok, "POST", "/cluster/leave", nil, nil); st != 200 {
		t.Fatalf("leave: %d", st)
	}
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		for _, n := range rest {
			if h := n.Presence.Home(uid); h == home.Config.NodeID {
				return fmt.Errorf("%s still homes %s on %s", n.Config.NodeID, uid, h)
			}
		}
		return nil
	})
	holdFor(t, 4*grace, 20*time.Millisecond, func() error {
		for _, n := range rest {
			if got := httpStatus(t, n, tok, uid); got != "online" {
				return fmt.Errorf("GET on %s after the home left: %q", n.Config.NodeID, got)
			}
		}
		for _, s := range statuses(t, watcher, "presence/"+uid) {
			if s != "online" {
				return fmt.Errorf("watcher saw %q after the home left", s)
			}
		}
		return nil
	})
	_ = dev.Disconnect(&paho.Disconnect{})
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		for _, n := range rest {
			if got := httpStatus(t, n, tok, uid); got != "offline" {
				return fmt.Errorf("GET on %s (home %s): %q; watcher saw %v", n.Config.NodeID, n.Presence.Home(uid), got, statuses(t, watcher, "presence/"+uid))
			}
		}
		return nil
	})
}
