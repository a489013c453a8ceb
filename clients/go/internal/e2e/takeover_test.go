package e2e_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	edgechat "github.com/edgechat/edgechat/clients/go"
	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/internal/testutil/mqtttest"
	"github.com/edgechat/edgechat/node/nodetest"
)

// Two running clients of one user with the same Options.Device (one
// MQTT client ID) do not take the connection from each other for ever:
// the server closes the older one (DISCONNECT 0x8E), which waits a
// moment, connects again and takes the ID back once; taken over a second
// time, it tells OnTakenOver and stays off, and the other keeps its
// connection and gets the user's messages. Before, each reconnected at once and took the
// connection back: 17 connections (each a sync and a group listing) in
// five seconds, for as long as both ran.
func TestTwoClientsWithOneDeviceDoNotTakeTurnsForEver(t *testing.T) {
	n := nodetest.StartNode(t)
	tok, bobTok := n.NewUser(t, "alice"), n.NewUser(t, "bob")
	var ups [2]atomic.Int32
	var takenOver [2]atomic.Int32
	clients := make([]*edgechat.Client, 2)
	inboxes := []*inbox{newInbox(), newInbox()}
	for i := range 2 {
		clients[i] = dial(t, []string{n.WSURL}, "", tok, inboxes[i], func(o *edgechat.Options) {
			o.Device = "laptop"
			o.OnConnectionChange = func(up bool) {
				if up {
					ups[i].Add(1)
				}
			}
			o.OnTakenOver = func() { takenOver[i].Add(1) }
		})
	}
	testutil.CheckFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		if takenOver[0].Load()+takenOver[1].Load() != 1 {
			return fmt.Errorf("the clients were told of %d and %d takeovers, want 1 in all", takenOver[0].Load(), takenOver[1].Load())
		}
		return nil
	})
	off, on := 0, 1
	if takenOver[1].Load() == 1 {
		off, on = 1, 0
	}
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if !clients[on].Connected() {
			return fmt.Errorf("the client not told (#%d) is not connected", on+1)
		}
		return nil
	})
	// Nothing more may happen: a window of three seconds (more than the
	// pause after a first takeover).
	u := []int32{ups[0].Load(), ups[1].Load()}
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if ups[0].Load() != u[0] || ups[1].Load() != u[1] || takenOver[on].Load() != 0 {
			t.Fatalf("connections went on: first %d then %d, second %d then %d; takeovers told the one still on: %d",
				u[0], ups[0].Load(), u[1], ups[1].Load(), takenOver[on].Load())
		}
	}
	if u[0] > 2 || u[1] > 2 {
		t.Fatalf("connections: first %d, second %d; want 2 each at most", u[0], u[1])
	}
	if clients[off].Connected() || !clients[on].Connected() {
		t.Fatalf("connected: the one told %v, the other %v; want only the other", clients[off].Connected(), clients[on].Connected())
	}
	bob := dial(t, []string{n.WSURL}, "", bobTok, nil, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := bob.Send(ctx, "alice", "to the one that runs")
	if err != nil {
		t.Fatal(err)
	}
	inboxes[on].waitOnce(t, m.ID)
}

// A lone takeover (another connection with the client's ID that comes
// and goes, as a registration of an earlier connection of this client
// that the cluster commits late does) does not stop the client: it
// connects again after a moment and is not told OnTakenOver.
func TestALoneTakeoverDoesNotStopTheClient(t *testing.T) {
	n := nodetest.StartNode(t)
	tok, bobTok := n.NewUser(t, "alice"), n.NewUser(t, "bob")
	var told atomic.Int32
	var downs atomic.Int32
	ab := newInbox()
	alice := dial(t, []string{n.WSURL}, "", tok, ab, func(o *edgechat.Options) {
		o.Device = "laptop"
		o.OnTakenOver = func() { told.Add(1) }
		o.OnConnectionChange = func(up bool) {
			if !up {
				downs.Add(1)
			}
		}
	})
	other := mqtttest.MustDial(t, n.MQTTURL, mqtttest.Options{ClientID: "alice/laptop", Username: "alice", Password: tok})
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if downs.Load() != 1 {
			return fmt.Errorf("alice's SDK client saw %d drops, want 1 (taken over)", downs.Load())
		}
		return nil
	})
	_ = other.Disconnect(&paho.Disconnect{ReasonCode: 0})
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if !alice.Connected() {
			return fmt.Errorf("alice's SDK client did not connect again after a lone takeover")
		}
		return nil
	})
	if told.Load() != 0 {
		t.Fatalf("OnTakenOver told %d times after a lone takeover, want 0", told.Load())
	}
	bob := dial(t, []string{n.WSURL}, "", bobTok, nil, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := bob.Send(ctx, "alice", "still here?")
	if err != nil {
		t.Fatal(err)
	}
	ab.waitOnce(t, m.ID)
}
