package node_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgechat/edgechat/node/nodetest"
)

// Presence stays right across the partition of
// TestANodeCutOffWhileAnotherWasMarkedDownSendsItsClientsElsewhere: n3 is
// marked down; then n2, the home of uid, is cut off while n3 comes back.
// n2 still applies "n3 down", so it does not count itself down (it
// keeps what it homes, in its own view) though it sends its clients
// away; n1 and n3 mark n2 down and home uid themselves. uid's device,
// on n1 all along, stays online for a watcher on n1 with no offline on
// the way, goes offline when it leaves and online when it comes back;
// once n2 is back and homes uid again, every node says online, and
// offline after the device leaves.
func TestPresenceOfAUserHomedOnANodeCutOffWhileAnotherWasMarkedDown(t *testing.T) {
	sc := startStaleMarks(t, nodetest.WithPresence(time.Minute, 300*time.Millisecond))
	n1, onN2, onN3 := sc.n1, sc.onN2, sc.onN3
	all := []*nodetest.Node{n1, onN2, onN3}
	uid := userHomedOn("n2")
	homes := func(ns []*nodetest.Node) error {
		want := ns[0].Presence.Home(uid)
		for _, n := range ns {
			if h := n.Presence.Home(uid); h != want {
				return fmt.Errorf("%s thinks %s's home is %s, %s thinks %s", n.Config.NodeID, uid, h, ns[0].Config.NodeID, want)
			}
		}
		return nil
	}
	checkFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		if err := homes(all); err != nil {
			return err
		}
		if h := n1.Presence.Home(uid); h != "n2" {
			return fmt.Errorf("%s homed on %s, want n2", uid, h)
		}
		return nil
	})
	w := watchUser(t, n1, n1, uid)

	sc.n3Away(t)
	sc.cutN2(t)
	up := []*nodetest.Node{n1, onN3}
	checkFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		if err := wantMarkedDown(t, n1, sc.adminTok, map[string]bool{"n2": true}); err != nil {
			return err
		}
		if h := n1.Presence.Home(uid); h == "n2" {
			return fmt.Errorf("%s still homed on n2, marked down", uid)
		}
		return homes(up)
	})
	sc.wantStale(t)
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		for _, n := range up {
			if got := httpStatus(t, n, w.watchTok, uid); got != "online" {
				return fmt.Errorf("GET /presence/%s on %s with n2 cut off: %q", uid, n.Config.NodeID, got)
			}
		}
		return nil
	})
	if st := statuses(t, w.watcher, "presence/"+uid); slices.Contains(st, "offline") {
		t.Fatalf("watcher saw %v: offline while the device was connected", st)
	}
	_ = w.dev.Disconnect(&paho.Disconnect{})
	checkFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		if st := statuses(t, w.watcher, "presence/"+uid); st[len(st)-1] != "offline" {
			return fmt.Errorf("watcher saw %v after the device left, its home n2 cut off", st)
		}
		return nil
	})
	w.dev = mustConnectV5(t, n1.MQTTURL, uid, "phone", w.tok)
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if st := statuses(t, w.watcher, "presence/"+uid); st[len(st)-1] != "online" {
			return fmt.Errorf("watcher saw %v after the device came back, its home n2 cut off", st)
		}
		return nil
	})

	sc.intoN2.SetCut(false)
	checkFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		if err := wantMarkedDown(t, n1, sc.adminTok, nil); err != nil {
			return err
		}
		if h := n1.Presence.Home(uid); h != "n2" {
			return fmt.Errorf("%s homed on %s after n2's return, want n2", uid, h)
		}
		return homes(all)
	})
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		for _, n := range all {
			if got := httpStatus(t, n, w.watchTok, uid); got != "online" {
				return fmt.Errorf("GET /presence/%s on %s after n2 returned: %q", uid, n.Config.NodeID, got)
			}
		}
		return nil
	})
	n := len(statuses(t, w.watcher, "presence/"+uid))
	_ = w.dev.Disconnect(&paho.Disconnect{})
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if st := statuses(t, w.watcher, "presence/"+uid); st[len(st)-1] != "offline" {
			return fmt.Errorf("watcher saw %v after the device left, n2 back", st)
		}
		for _, n := range all {
			if got := httpStatus(t, n, w.watchTok, uid); got != "offline" {
				return fmt.Errorf("GET /presence/%s on %s after the device left, n2 back: %q", uid, n.Config.NodeID, got)
			}
		}
		return nil
	})
	if st := statuses(t, w.watcher, "presence/"+uid); slices.Contains(st[n:len(st)-1], "offline") {
		t.Fatalf("watcher saw %v: offline while the device was connected, n2 back", st)
	}
}
