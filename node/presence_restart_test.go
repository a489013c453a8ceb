package node_test

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgechat/edgechat/internal/testutil/mqtttest"
	"github.com/edgechat/edgechat/node/nodetest"
	"github.com/edgechat/edgechat/services/presence"
)

// watchedUser is a user with a device connected to one node and a
// watcher (their contact) on another that has seen them online.
type watchedUser struct {
	uid, tok, watchTok string
	watcher, dev       *mqtttest.Client
}

// userHomedOn is a user whose home among n1, n2 and n3 is home.
func userHomedOn(home string) string {
	for i := 0; ; i++ {
		if u := fmt.Sprintf("user%d", i); presence.HomeAmong([]string{"n1", "n2", "n3"}, u) == home {
			return u
		}
	}
}

// watchUser makes uid a watchedUser: the device on devNode, the watcher
// on watchNode.
func watchUser(t *testing.T, devNode, watchNode *nodetest.Node, uid string) watchedUser {
	t.Helper()
	w := watchedUser{uid: uid}
	w.tok = devNode.NewUser(t, w.uid)
	w.watchTok = devNode.NewUser(t, "watcher")
	if st := api(t, devNode, w.tok, "POST", "/user/me/contacts", map[string]string{"uid": "watcher"}, nil); st/100 != 2 {
		t.Fatalf("add contact: %d", st)
	}
	w.watcher = mustConnectV5(t, watchNode.MQTTURL, "watcher", "phone", w.watchTok)
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if r := w.watcher.Sub(t, "presence/"+w.uid); r[0] > 2 {
			return fmt.Errorf("watcher may not watch %s yet: %#x", w.uid, r[0])
		}
		return nil
	})
	w.dev = mustConnectV5(t, devNode.MQTTURL, w.uid, "phone", w.tok)
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if st := statuses(t, w.watcher, "presence/"+w.uid); len(st) == 0 || st[len(st)-1] != "online" {
			return fmt.Errorf("watcher saw %v", st)
		}
		return nil
	})
	return w
}

// A user's home node restarts (a rolling upgrade, or a crash and a
// restart) while the user stays connected to another node: the home
// comes back knowing nothing of the user. It must learn the user's
// connections again, so that GET /presence/{uid} keeps answering
// online, and the user leaving afterwards is published as offline to
// the watchers. Before: the restarted home answered offline for a
// connected user, and ignored the Disconnected of a connection it did
// not know, so the watchers' retained presence/{uid} stayed online for
// good.
func TestPresenceSurvivesARestartOfTheHome(t *testing.T) {
	const grace = 300 * time.Millisecond
	// A long heartbeat interval: the device sends no heartbeats; the
	// test is about connections.
	opts := []nodetest.Option{nodetest.WithPresence(time.Minute, grace)}
	nodes := nodetest.StartCluster(t, 3, opts...)
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		for _, n := range nodes {
			if h := n.Presence.Home("x"); h != nodes[0].Presence.Home("x") {
				return fmt.Errorf("%s thinks x's home is %s", n.Config.NodeID, h)
			}
		}
		return nil
	})
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	// A user homed on n3; their device connects to n1, the watcher to n2.
	w := watchUser(t, n1, n2, userHomedOn("n3"))
	uid, watchTok, watcher, dev := w.uid, w.watchTok, w.watcher, w.dev

	// The home restarts at the same address.
	cfg := n3.Config
	cfg.ClusterAddr = n3.ClusterAddr()
	cfg.Join = []string{n1.ClusterAddr()}
	if err := n3.Stop(); err != nil {
		t.Fatal(err)
	}
	again, err := nodetest.Start(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = again.Stop() })

	// The device is still connected: online, on every node.
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		for _, n := range []*nodetest.Node{n1, n2, again} {
			if got := httpStatus(t, n, watchTok, uid); got != "online" {
				return fmt.Errorf("GET /presence/%s on %s after its home restarted: %q", uid, n.Config.NodeID, got)
			}
		}
		return nil
	})

	// The device leaves: offline reaches the watcher.
	_ = dev.Disconnect(&paho.Disconnect{})
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if st := statuses(t, watcher, "presence/"+uid); st[len(st)-1] != "offline" {
			return fmt.Errorf("watcher saw %v after the device left; GET on n1: %q", st, httpStatus(t, n1, watchTok, uid))
		}
		return nil
	})
}

// A node that restarts has lost its copies of the retained
// presence/{uid}: it must get them back from the other nodes, so that a
// client that subscribes there gets the current status of a user who
// is online on another node (whose status does not change meanwhile).
// Before: nothing was retained there until the user's status changed;
// a watcher connecting to the restarted node saw no status at all.
func TestARestartedNodeServesRetainedPresence(t *testing.T) {
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
	// A user homed on n1 or n2, connected to n1.
	var uid string
	for i := 0; uid == ""; i++ {
		if u := fmt.Sprintf("user%d", i); n1.Presence.Home(u) != "n3" {
			uid = u
		}
	}
	tok := n1.NewUser(t, uid)
	watchTok := n1.NewUser(t, "watcher")
	if st := api(t, n1, tok, "POST", "/user/me/contacts", map[string]string{"uid": "watcher"}, nil); st/100 != 2 {
		t.Fatalf("add contact: %d", st)
	}
	mustConnectV5(t, n1.MQTTURL, uid, "phone", tok)
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if p, ok := n3.Broker.Retained("presence/" + uid); !ok || !strings.Contains(string(p), `"online"`) {
			return fmt.Errorf("n3 retains %q for %s", p, uid)
		}
		return nil
	})

	cfg := n3.Config
	cfg.ClusterAddr = n3.ClusterAddr()
	cfg.Join = []string{n1.ClusterAddr()}
	if err := n3.Stop(); err != nil {
		t.Fatal(err)
	}
	again, err := nodetest.Start(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = again.Stop() })

	watcher := mustConnectV5(t, again.MQTTURL, "watcher", "phone", watchTok)
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if r := watcher.Sub(t, "presence/"+uid); r[0] > 2 {
			return fmt.Errorf("watcher may not watch %s yet: %#x", uid, r[0])
		}
		return nil
	})
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if st := statuses(t, watcher, "presence/"+uid); len(st) == 0 || st[len(st)-1] != "online" {
			return fmt.Errorf("a watcher on the restarted node saw %v for %s, online on n1", st, uid)
		}
		return nil
	})
}
