package node_test

import (
	"fmt"
	"io"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgechat/edgechat/node/nodetest"
)

// A user's home node goes down and stays a member (nobody removes it):
// the user's presence must not freeze. Their device on n1 leaves: a
// watcher on n2 sees offline after the grace; the device comes back:
// online. Then the home returns, takes the user back, and presence
// stays right. Before: the events went to the dead home, retried for
// ever; the watcher kept "online" while the device was gone.
func TestPresenceMovesOffAHomeThatIsDown(t *testing.T) {
	const grace = 300 * time.Millisecond
	nodes := nodetest.StartCluster(t, 3, nodetest.WithPresence(time.Minute, grace))
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	homesAgree := func(ns []*nodetest.Node, uid, want string) error {
		for _, n := range ns {
			if h := n.Presence.Home(uid); h != want {
				return fmt.Errorf("%s thinks %s's home is %s, want %s", n.Config.NodeID, uid, h, want)
			}
		}
		return nil
	}
	uid := userHomedOn("n3")
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error { return homesAgree(nodes, uid, "n3") })
	w := watchUser(t, n1, n2, uid)
	tok, watchTok, watcher, dev := w.tok, w.watchTok, w.watcher, w.dev

	// The home goes down and stays a member.
	cfg := n3.Config
	cfg.ClusterAddr = n3.ClusterAddr()
	cfg.Join = []string{n1.ClusterAddr()}
	if err := n3.Stop(); err != nil {
		t.Fatal(err)
	}
	up := []*nodetest.Node{n1, n2}
	checkFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		h := n1.Presence.Home(uid)
		if h == "n3" {
			return fmt.Errorf("%s is still homed on n3, which is down", uid)
		}
		return homesAgree(up, uid, h)
	})
	// The device stayed connected: online on the new home, no offline
	// on the way.
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		for _, n := range up {
			if got := httpStatus(t, n, watchTok, uid); got != "online" {
				return fmt.Errorf("GET /presence/%s on %s with n3 down: %q", uid, n.Config.NodeID, got)
			}
		}
		return nil
	})
	if st := statuses(t, watcher, "presence/"+uid); slices.Contains(st, "offline") {
		t.Fatalf("watcher saw %v: offline while the device was connected", st)
	}

	// The device leaves: offline after the grace.
	_ = dev.Disconnect(&paho.Disconnect{})
	checkFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		if st := statuses(t, watcher, "presence/"+uid); st[len(st)-1] != "offline" {
			return fmt.Errorf("watcher saw %v after the device left, its home n3 down", st)
		}
		return nil
	})
	// It comes back: online.
	dev = mustConnectV5(t, n1.MQTTURL, uid, "phone", tok)
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if st := statuses(t, watcher, "presence/"+uid); st[len(st)-1] != "online" {
			return fmt.Errorf("watcher saw %v after the device came back, its home n3 down", st)
		}
		return nil
	})

	// The home returns and takes the user back; presence stays right.
	again, err := nodetest.Start(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = again.Stop() })
	all := []*nodetest.Node{n1, n2, again}
	checkFor(t, 20*time.Second, 20*time.Millisecond, func() error { return homesAgree(all, uid, "n3") })
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		for _, n := range all {
			if got := httpStatus(t, n, watchTok, uid); got != "online" {
				return fmt.Errorf("GET /presence/%s on %s after n3 returned: %q", uid, n.Config.NodeID, got)
			}
		}
		return nil
	})
	n := len(statuses(t, watcher, "presence/"+uid))
	_ = dev.Disconnect(&paho.Disconnect{})
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if st := statuses(t, watcher, "presence/"+uid); st[len(st)-1] != "offline" {
			return fmt.Errorf("watcher saw %v after the device left, n3 back", st)
		}
		return nil
	})
	if st := statuses(t, watcher, "presence/"+uid); slices.Contains(st[n:len(st)-1], "offline") {
		t.Fatalf("watcher saw %v: offline while the device was connected, n3 back", st)
	}
}
