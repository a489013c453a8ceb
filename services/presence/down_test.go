package presence

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/internal/wire"
)

// setDown reports the named members down (or none), cuts them off from
// every call, and announces the change.
func (n *fakeNet) setDown(names ...string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.down, n.cut = map[string]bool{}, map[string]bool{}
	for _, name := range names {
		n.down[name], n.cut[name] = true, true
	}
	close(n.changed)
	n.changed = make(chan struct{})
}

// A user's home is cut off (still running, still a member; the cluster
// marks it down, and it counts itself down): the user gets a live home
// among the nodes up, which takes over without an offline on the way,
// and the cut-off node stops acting as the home (it forgets the user
// without publishing: its view of the user's connections is stale).
// The device leaves: offline; it comes back: online. The home returns:
// it takes the user back from the members' copies and their
// connections. Before: Down was ignored, the events for the user went to
// the cut-off home for ever and the user stayed online.
func TestACutOffHomeHandsItsUsersToTheNodesUp(t *testing.T) {
	net, clk, svc := startFakeCluster(t)
	refresh := func() {
		for _, s := range svc {
			s.cl.refreshMembers()
		}
	}
	uid := userHomedOn("n3")
	newHome := HomeAmong([]string{"n1", "n2"}, uid)
	// The device is on the node that is not the new home: its events
	// travel.
	devNode := map[string]string{"n1": "n2", "n2": "n1"}[newHome]
	dev := svc[devNode]
	dev.Connected(uid, "phone")
	testutil.CheckFor(t, 5*time.Second, time.Millisecond, func() error {
		if n := connsOf(svc["n3"], uid); n != 1 {
			return fmt.Errorf("the home counts %d connections", n)
		}
		return nil
	})

	net.setDown("n3")
	refresh()
	for _, s := range svc {
		if h := s.Home(uid); h != newHome {
			t.Fatalf("%s homes %s on %s with n3 down, want %s", s.cl.self, uid, h, newHome)
		}
	}
	testutil.CheckFor(t, 5*time.Second, time.Millisecond, func() error {
		if n := connsOf(svc[newHome], uid); n != 1 {
			return fmt.Errorf("the new home %s counts %d connections", newHome, n)
		}
		return nil
	})
	if n := connsOf(svc["n3"], uid); n != 0 {
		t.Fatalf("the cut-off n3 still counts %d connections of %s", n, uid)
	}
	if p := svc[newHome].Status(uid); p.Status != wire.StatusOnline {
		t.Fatalf("the new home says %+v, want online", p)
	}
	want := []string{uid + ":online"}
	if got := net.published(); !slices.Equal(got, want) {
		t.Fatalf("published %v, want %v (no offline on the way)", got, want)
	}

	// The device leaves: offline after the grace, from the new home;
	// the cut-off node, ticking all along, publishes nothing.
	dev.Disconnected(uid, "phone")
	testutil.CheckFor(t, 5*time.Second, time.Millisecond, func() error {
		if n := connsOf(svc[newHome], uid); n != 0 {
			return fmt.Errorf("the new home counts %d connections", n)
		}
		return nil
	})
	for range 6 * interval / svc[newHome].period {
		clk.Advance(svc[newHome].period)
		for _, s := range svc {
			s.tick()
		}
	}
	want = append(want, uid+":offline")
	if got := net.published(); !slices.Equal(got, want) {
		t.Fatalf("after the device left: published %v, want %v", got, want)
	}
	// It comes back: online.
	dev.Connected(uid, "phone2")
	testutil.CheckFor(t, 5*time.Second, time.Millisecond, func() error {
		if p := svc[newHome].Status(uid); p.Status != wire.StatusOnline {
			return fmt.Errorf("the new home says %+v", p)
		}
		return nil
	})

	// n3 is back: the user goes home, still online (the device's node
	// announces the connection again), with no offline on the way.
	net.setDown()
	refresh()
	svc["n3"].cl.hello(context.Background(), "n1")
	svc["n3"].cl.hello(context.Background(), "n2")
	testutil.CheckFor(t, 5*time.Second, time.Millisecond, func() error {
		if n := connsOf(svc["n3"], uid); n != 1 {
			return fmt.Errorf("n3, back, counts %d connections", n)
		}
		return nil
	})
	if p := svc["n3"].Status(uid); p.Status != wire.StatusOnline {
		t.Fatalf("n3, back, says %+v, want online", p)
	}
	want = append(want, uid+":online")
	if got := net.published(); !slices.Equal(got, want) {
		t.Fatalf("after n3 came back: published %v, want %v", got, want)
	}
}

// A home back from down (cut off) holds a copy of presence/{uid} that
// missed what happened meanwhile: offline for a user who connected to
// another node then. That node announces the live connection again: the
// user is online. Before: the home took the stale offline over and kept
// the user offline with a live connection.
func TestAConnectionAnnouncedAgainOverAStaleOfflineCopyIsOnline(t *testing.T) {
	clk := newTestClock()
	payload, _ := json.Marshal(wire.Presence{Status: wire.StatusOffline, LastSeen: clk.Now().Add(-time.Hour)})
	pub := &recorder{}
	s, err := New(Config{Interval: interval, Grace: grace}, Deps{
		Publisher: pub, Logger: testutil.QuietLogger(), Clock: clk, Retained: retainedMap{"presence/bob": payload},
	})
	if err != nil {
		t.Fatal(err)
	}
	s.apply("n2", 1, Event{Kind: EventConnected, UID: "bob", ConnID: "phone", Again: true, Status: wire.StatusOnline})
	if p := s.Status("bob"); p.Status != wire.StatusOnline {
		t.Fatalf("Status(bob) with a live connection announced again = %+v, want online", p)
	}
}

// A user connected but idle (no heartbeat for 5 intervals) is offline
// with a live connection (protocol.md: "an inactive or offline (idle)
// user stays so"). Their home goes down: the connection's node
// announces it again to the new home, whose copy and the sender's both
// say offline. The user stays offline: the announcement is the device's
// connection going on, not the user coming back. Before: a copy that
// says offline was taken for a stale one, and every idle user homed on
// a member that went down (or came back) was published online.
func TestAnIdleOfflineUserStaysOfflineWhenTheHomeGoesDown(t *testing.T) {
	net, clk, svc := startFakeCluster(t)
	uid := userHomedOn("n3")
	newHome := HomeAmong([]string{"n1", "n2"}, uid)
	devNode := map[string]string{"n1": "n2", "n2": "n1"}[newHome]
	svc[devNode].Connected(uid, "phone")
	testutil.CheckFor(t, 5*time.Second, time.Millisecond, func() error {
		if n := connsOf(svc["n3"], uid); n != 1 {
			return fmt.Errorf("the home counts %d connections", n)
		}
		return nil
	})
	// No heartbeat for 5 intervals: inactive, then offline, still
	// connected.
	for range 5 * interval / svc["n3"].period {
		clk.Advance(svc["n3"].period)
		svc["n3"].tick()
	}
	want := []string{uid + ":online", uid + ":inactive", uid + ":offline"}
	if got := net.published(); !slices.Equal(got, want) {
		t.Fatalf("published %v, want %v", got, want)
	}

	net.setDown("n3")
	for _, s := range svc {
		s.cl.refreshMembers()
	}
	testutil.CheckFor(t, 5*time.Second, time.Millisecond, func() error {
		if n := connsOf(svc[newHome], uid); n != 1 {
			return fmt.Errorf("the new home %s counts %d connections", newHome, n)
		}
		return nil
	})
	if got := net.published(); !slices.Equal(got, want) {
		t.Fatalf("after the home went down: published %v, want %v (the idle user stays offline)", got, want)
	}
	if p := svc[newHome].Status(uid); p.Status != wire.StatusOffline {
		t.Fatalf("the new home says %+v, want offline", p)
	}
}
