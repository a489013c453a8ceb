package node_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgechat/edgechat/internal/testutil/mqtttest"
	"github.com/edgechat/edgechat/node/nodetest"
)

// lookupOn is where node n's registry says clientID is connected ("" if nowhere).
func lookupOn(t *testing.T, n *nodetest.Node, clientID string) string {
	t.Helper()
	e, ok, err := n.Broker.Registry().Lookup(clientID)
	if err != nil {
		t.Fatal(err)
	}
	if !ok {
		return ""
	}
	return e.Node
}

// The same client ID connecting to n2 while connected to n1: n1 closes
// its connection with DISCONNECT 0x8E, every node's registry names n2
// (n1's late withdraw erases nothing), and only n2's connection gets
// messages afterwards. A node that leaves takes its entries with it.
func TestTakeoverAcrossNodes(t *testing.T) {
	nodes := nodetest.StartCluster(t, 3)
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	adminTok := n1.NewUser(t, "root") // the first account is the admin
	aliceTok, bobTok := n1.NewUser(t, "alice"), n1.NewUser(t, "bob")

	old := mustConnectV5(t, n1.MQTTURL, "alice", "phone", aliceTok)
	old.Sub(t, "user/alice/#")
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		for _, n := range nodes {
			if got := lookupOn(t, n, "alice/phone"); got != "n1" {
				return fmt.Errorf("%s registry: alice/phone on %q", n.Config.NodeID, got)
			}
		}
		return nil
	})

	start := time.Now()
	cur := mustConnectV5(t, n2.MQTTURL, "alice", "phone", aliceTok)
	cur.Sub(t, "user/alice/#")
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		select {
		case <-old.Done():
		default:
			return errors.New("n1 still holds the old connection")
		}
		return nil
	})
	t.Logf("old connection closed %v after the new CONNECT", time.Since(start))
	if r, ok := old.ServerDisconnect(); !ok || r != 0x8E {
		t.Fatalf("old connection's DISCONNECT reason %#x (sent: %v), want 0x8E session taken over", r, ok)
	}
	select {
	case <-cur.Done():
		t.Fatal("the new connection was closed too")
	default:
	}
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		for _, n := range nodes {
			if got := lookupOn(t, n, "alice/phone"); got != "n2" {
				return fmt.Errorf("%s registry: alice/phone on %q", n.Config.NodeID, got)
			}
		}
		if n1.Broker.Connections() != 0 {
			return fmt.Errorf("n1 still has %d connections", n1.Broker.Connections())
		}
		// The old clean session is gone from n1, and so is its route.
		if n3.Broker.RouteTable().Has("n1", "user/alice/#") || !n3.Broker.RouteTable().Has("n2", "user/alice/#") {
			return errors.New("routes of alice's inbox not yet moved to n2")
		}
		return nil
	})

	bob := mustConnectV5(t, n3.MQTTURL, "bob", "phone", bobTok)
	if code, _ := bob.Pub(t, "user/alice/newMessage", 1, textMsg("t1", "after takeover")); code != 0 {
		t.Fatalf("publish: %#x", code)
	}
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if got := len(cur.Received("user/alice/newMessage")); got != 1 {
			return fmt.Errorf("the new connection got %d messages", got)
		}
		return nil
	})
	if got := len(old.Received("user/alice/newMessage")); got != 0 {
		t.Fatalf("the taken-over connection got %d messages", got)
	}
	// Still n2 after everything settled: nothing withdrew the new entry.
	for _, n := range nodes {
		if got := lookupOn(t, n, "alice/phone"); got != "n2" {
			t.Fatalf("%s registry: alice/phone on %q", n.Config.NodeID, got)
		}
	}

	// A clean disconnect withdraws the entry.
	_ = cur.Disconnect(&paho.Disconnect{})
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if got := lookupOn(t, n1, "alice/phone"); got != "" {
			return fmt.Errorf("after disconnect: alice/phone on %q", got)
		}
		return nil
	})

	// n3 leaves: its entries (bob's) go with it.
	if got := lookupOn(t, n1, "bob/phone"); got != "n3" {
		t.Fatalf("bob/phone on %q, want n3", got)
	}
	if st := api(t, n3, adminTok, "POST", "/cluster/leave", nil, nil); st != 200 {
		t.Fatalf("leave: %d", st)
	}
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if got := lookupOn(t, n1, "bob/phone"); got != "" {
			return fmt.Errorf("after n3 left: bob/phone on %q", got)
		}
		return nil
	})
}

// A persistent session left offline on one node ends when its client ID
// connects to another node: the cluster is one server, and a clean start
// there discards the session [MQTT-3.1.2-4] (a session never moves between
// nodes). Before, n1 kept the offline session, its subscription and its
// route: it queued the messages sent meanwhile, and the client, back on
// n1 a day later, had the old session resumed (session present) with
// every one of them again.
func TestOfflineSessionEndsWhenItsClientConnectsToAnotherNode(t *testing.T) {
	nodes := nodetest.StartCluster(t, 3)
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	aliceTok, bobTok := n1.NewUser(t, "alice"), n1.NewUser(t, "bob")
	persistent := mqtttest.Options{ClientID: "bob/phone", Username: "bob", Password: bobTok,
		KeepSession: true, SessionExpiry: 600}

	bob := mqtttest.MustDial(t, n1.MQTTURL, persistent)
	bob.MustSub(t, "user/bob/newMessage")
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if got := lookupOn(t, n3, "bob/phone"); got != "n1" {
			return fmt.Errorf("registry: bob/phone on %q", got)
		}
		return nil
	})
	_ = bob.Conn.Close() // lost: the session waits on n1
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if got := lookupOn(t, n3, "bob/phone"); got != "" {
			return fmt.Errorf("registry: bob/phone still on %q", got)
		}
		return nil
	})

	clean := persistent
	clean.KeepSession = false
	bob2 := mqtttest.MustDial(t, n2.MQTTURL, clean)
	bob2.MustSub(t, "user/bob/newMessage")
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if got := lookupOn(t, n3, "bob/phone"); got != "n2" {
			return fmt.Errorf("registry: bob/phone on %q", got)
		}
		return nil
	})
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if n3.Broker.RouteTable().Has("n1", "user/bob/newMessage") {
			return errors.New("n1 still routes bob's inbox")
		}
		return nil
	})

	alice := mustConnectV5(t, n3.MQTTURL, "alice", "phone", aliceTok)
	if code, _ := alice.Pub(t, "user/bob/newMessage", 1, textMsg("m1", "while on n2")); code != 0 {
		t.Fatalf("publish: %#x", code)
	}
	if got := bob2.Next(t); string(got.Payload) == "" {
		t.Fatal("empty delivery")
	}
	_ = bob2.Disconnect(&paho.Disconnect{})

	_, ack, err := mqtttest.Dial(t, n1.MQTTURL, persistent)
	if err != nil {
		t.Fatal(err)
	}
	if ack.SessionPresent {
		t.Fatal("n1 resumed the session that the clean start on n2 discarded")
	}
}
