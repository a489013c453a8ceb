package node_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/edgechat/edgechat/node/nodetest"
)

// A device whose user is idle (a tab hidden long enough to be offline
// while connected) is taken over by its own client ID, then drops
// without a DISCONNECT and comes back within the grace: the watcher sees
// no "online", since neither is the user coming back; the next
// heartbeat is. Before, each reconnect published online (and the timers
// demoted the user again later): a network blip or a node restart showed
// every idle user as active.
func TestPresenceReconnectOfAnIdleDeviceDoesNotShowItOnline(t *testing.T) {
	const interval = 100 * time.Millisecond
	n := nodetest.StartNode(t, nodetest.WithPresence(interval, time.Minute))
	aliceTok, bobTok := n.NewUser(t, "alice"), n.NewUser(t, "bob")
	if st := api(t, n, aliceTok, "POST", "/user/me/contacts", map[string]string{"uid": "bob"}, nil); st/100 != 2 {
		t.Fatalf("add contact: %d", st)
	}
	bob := mustConnectV5(t, n.MQTTURL, "bob", "d1", bobTok)
	bob.MustSub(t, "presence/alice")
	waitLast := func(want string) {
		t.Helper()
		checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
			s := statuses(t, bob, "presence/alice")
			if len(s) == 0 || s[len(s)-1] != want {
				return fmt.Errorf("statuses %v, want last %q", s, want)
			}
			return nil
		})
	}
	tab := mustConnectV5(t, n.MQTTURL, "alice", "web-1", aliceTok)
	waitLast("offline") // no heartbeats: online, inactive, offline
	seen := len(statuses(t, bob, "presence/alice"))

	tab2 := mustConnectV5(t, n.MQTTURL, "alice", "web-1", aliceTok) // takes the session over
	<-tab.Done()
	_ = tab2.Conn.Close() // dropped without DISCONNECT
	tab3 := mustConnectV5(t, n.MQTTURL, "alice", "web-1", aliceTok)
	holdFor(t, 5*interval, 10*time.Millisecond, func() error {
		if s := statuses(t, bob, "presence/alice"); len(s) != seen {
			return fmt.Errorf("the idle device's reconnects published %v", s[seen:])
		}
		return nil
	})
	tab3.Pub(t, "presence/alice/heartbeat", 1, "")
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if s := statuses(t, bob, "presence/alice"); len(s) == seen || s[seen] != "online" {
			return fmt.Errorf("after the heartbeat: %v", s[seen:])
		}
		return nil
	})
}

// The same across a cluster: the node of an idle device stops (a
// rolling restart) and the device comes back on another node within the
// grace. The user's home (neither node) sees the old connection end (the
// stopping node's goodbye) and the same client connect elsewhere: a
// reconnect, so the watcher sees no "online".
func TestPresenceIdleDeviceMovedByANodeRestartIsNotShownOnline(t *testing.T) {
	const interval = 100 * time.Millisecond
	nodes := nodetest.StartCluster(t, 3, nodetest.WithPresence(interval, time.Minute))
	n1, n3 := nodes[0], nodes[2]
	uid := userHomedOn("n2")
	tok, bobTok := n1.NewUser(t, uid), n1.NewUser(t, "bob")
	if st := api(t, n1, tok, "POST", "/user/me/contacts", map[string]string{"uid": "bob"}, nil); st/100 != 2 {
		t.Fatalf("add contact: %d", st)
	}
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		for _, n := range nodes {
			if h := n.Presence.Home(uid); h != "n2" {
				return fmt.Errorf("%s homes %s on %s", n.Config.NodeID, uid, h)
			}
		}
		return nil
	})
	bob := mustConnectV5(t, n1.MQTTURL, "bob", "d1", bobTok)
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if r := bob.Sub(t, "presence/"+uid); r[0] > 2 {
			return fmt.Errorf("bob may not watch %s yet: %#x", uid, r[0])
		}
		return nil
	})
	waitLast := func(want string) {
		t.Helper()
		checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
			s := statuses(t, bob, "presence/"+uid)
			if len(s) == 0 || s[len(s)-1] != want {
				return fmt.Errorf("statuses %v, want last %q", s, want)
			}
			return nil
		})
	}
	dev := mustConnectV5(t, n3.MQTTURL, uid, "web-1", tok)
	waitLast("offline") // idle: no heartbeats
	seen := len(statuses(t, bob, "presence/"+uid))

	if err := n3.Stop(); err != nil {
		t.Fatal(err)
	}
	<-dev.Done()
	dev2 := mustConnectV5(t, n1.MQTTURL, uid, "web-1", tok)
	holdFor(t, 5*interval, 10*time.Millisecond, func() error {
		if s := statuses(t, bob, "presence/"+uid); len(s) != seen {
			return fmt.Errorf("the idle device's move published %v", s[seen:])
		}
		return nil
	})
	dev2.Pub(t, "presence/"+uid+"/heartbeat", 1, "")
	waitLast("online")
}
