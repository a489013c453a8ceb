package node_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgechat/edgechat/internal/testutil/mqtttest"
	"github.com/edgechat/edgechat/node/nodetest"
)

// lastAlicePresence is the status of the last presence/alice message c
// got ("" for none) and the subscription identifiers it carried.
func lastAlicePresence(c *mqtttest.Client) (string, []int) {
	got := c.Received("presence/alice")
	if len(got) == 0 {
		return "", nil
	}
	m := got[len(got)-1]
	var p struct{ Status string }
	_ = json.Unmarshal(m.Payload, &p)
	var ids []int
	if m.Properties != nil && m.Properties.SubscriptionIdentifier != nil {
		ids = []int{*m.Properties.SubscriptionIdentifier}
	}
	return p.Status, ids
}

// alicePresenceFor starts a node where alice has bob in her contacts and
// is online (one device, which it returns), and bob's watch (subscribe:
// bob's client subscribed to presence/alice) has shown her online.
func alicePresenceFor(t *testing.T, subscribe func(n *nodetest.Node, bobTok string) *mqtttest.Client) (n *nodetest.Node, aliceTok string, alice, bob *mqtttest.Client) {
	t.Helper()
	n = nodetest.StartNode(t)
	aliceTok, bobTok := n.NewUser(t, "alice"), n.NewUser(t, "bob")
	if st := api(t, n, aliceTok, "POST", "/user/me/contacts", map[string]string{"uid": "bob"}, nil); st/100 != 2 {
		t.Fatalf("add contact: %d", st)
	}
	bob = subscribe(n, bobTok)
	alice = mustConnectV5(t, n.MQTTURL, "alice", "phone", aliceTok)
	alice.Pub(t, "presence/alice/heartbeat", 0, "")
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if s, _ := lastAlicePresence(bob); s != "online" {
			return fmt.Errorf("bob's last presence/alice: %q, want online", s)
		}
		return nil
	})
	return n, aliceTok, alice, bob
}

// aliceWaits checks until alice's status is want.
func aliceWaits(t *testing.T, n *nodetest.Node, aliceTok, want string) {
	t.Helper()
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		var p struct{ Status string }
		if st := api(t, n, aliceTok, "GET", "/presence/alice", nil, &p); st != 200 || p.Status != want {
			return fmt.Errorf("alice's presence: %d %+v, want %s", st, p, want)
		}
		return nil
	})
}

// aliceRelation posts (or deletes) alice's contact or block of bob.
func aliceRelation(t *testing.T, n *nodetest.Node, aliceTok, method, path string) {
	t.Helper()
	var body any
	if method == "POST" {
		body = map[string]string{"uid": "bob"}
	} else {
		path += "/bob"
	}
	if st := api(t, n, aliceTok, method, path, body, nil); st/100 != 2 {
		t.Fatalf("%s %s: %d", method, path, st)
	}
}

// A watcher whose subscription to presence/{uid} was granted before uid
// blocked them keeps it (deliveries are refused while the block holds);
// once uid lifts the block, the last status the watcher got must not be
// one uid left meanwhile: protocol.md says the last presence/{uid} a
// client got is the current one.
func TestPresenceWatcherUnblockedDoesNotKeepAStaleStatus(t *testing.T) {
	n, aliceTok, alice, bob := alicePresenceFor(t, func(n *nodetest.Node, bobTok string) *mqtttest.Client {
		c := mustConnectV5(t, n.MQTTURL, "bob", "phone", bobTok)
		c.MustSub(t, "presence/alice")
		return c
	})
	aliceRelation(t, n, aliceTok, "POST", "/user/me/blocks")
	_ = alice.Disconnect(&paho.Disconnect{})
	aliceWaits(t, n, aliceTok, "offline")
	aliceRelation(t, n, aliceTok, "DELETE", "/user/me/blocks")
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if s, _ := lastAlicePresence(bob); s != "offline" {
			return fmt.Errorf("bob, unblocked, still has alice %q as his last presence/alice (her status: offline, every device gone)", s)
		}
		return nil
	})
	// Likewise a watcher alice took out of her contacts and adds back:
	// she came back meanwhile, and he must not keep her "offline".
	aliceRelation(t, n, aliceTok, "DELETE", "/user/me/contacts")
	alice = mustConnectV5(t, n.MQTTURL, "alice", "laptop", aliceTok)
	alice.Pub(t, "presence/alice/heartbeat", 0, "")
	aliceWaits(t, n, aliceTok, "online")
	aliceRelation(t, n, aliceTok, "POST", "/user/me/contacts")
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if s, _ := lastAlicePresence(bob); s != "online" {
			return fmt.Errorf("bob, a contact again, still has alice %q as his last presence/alice (her status: online)", s)
		}
		return nil
	})
}

// The status handed to a watcher alice unblocks goes as a delivery of the
// watcher's subscription would: with the subscription identifier the
// watcher gave it (MQTT 5 [MQTT-3.3.4-3]; a client that routes messages
// by it dropped the status, or gave it to no one). Before, the handed
// status carried no identifier.
func TestPresenceHandedOnUnblockCarriesTheSubscription(t *testing.T) {
	const subID = 7
	n, aliceTok, alice, bob := alicePresenceFor(t, func(n *nodetest.Node, bobTok string) *mqtttest.Client {
		c := mustConnectV5(t, n.MQTTURL, "bob", "phone", bobTok)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		id := subID
		if sa, err := c.Subscribe(ctx, &paho.Subscribe{Properties: &paho.SubscribeProperties{SubscriptionIdentifier: &id},
			Subscriptions: []paho.SubscribeOptions{{Topic: "presence/alice", QoS: 1}}}); err != nil || sa == nil || sa.Reasons[0] >= 0x80 {
			t.Fatalf("bob subscribes with an identifier: %v %+v", err, sa)
		}
		return c
	})
	aliceRelation(t, n, aliceTok, "POST", "/user/me/blocks")
	_ = alice.Disconnect(&paho.Disconnect{})
	aliceWaits(t, n, aliceTok, "offline")
	aliceRelation(t, n, aliceTok, "DELETE", "/user/me/blocks")
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if s, ids := lastAlicePresence(bob); s != "offline" || len(ids) != 1 || ids[0] != subID {
			return fmt.Errorf("bob, unblocked: last presence/alice %q with subscription identifiers %v, want offline with [%d]", s, ids, subID)
		}
		return nil
	})
}

// A watcher's persistent session that waits offline while alice lifts
// her block of him still holds presence/alice, whose deliveries were
// refused while the block held: when his phone comes back (session
// present, no new subscription, so no retained message) it must be
// handed alice's status as it is, as a connected session is. Before, it
// kept "online", her status before the block, until she next changed.
func TestPresenceOfflineWatcherUnblockedGetsTheStatusWhenItComesBack(t *testing.T) {
	var persistent mqtttest.Options
	n, aliceTok, alice, bob := alicePresenceFor(t, func(n *nodetest.Node, bobTok string) *mqtttest.Client {
		persistent = mqtttest.Options{ClientID: "bob/phone", Username: "bob", Password: bobTok, KeepSession: true, SessionExpiry: 600}
		c := mqtttest.MustDial(t, n.MQTTURL, persistent)
		c.MustSub(t, "presence/alice")
		return c
	})
	aliceRelation(t, n, aliceTok, "POST", "/user/me/blocks")
	_ = bob.Conn.Close() // lost: the session waits offline, subscribed
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if n.Broker.UserConnections("bob") != 0 {
			return errors.New("bob's connection is still counted")
		}
		return nil
	})
	_ = alice.Disconnect(&paho.Disconnect{})
	aliceWaits(t, n, aliceTok, "offline")
	aliceRelation(t, n, aliceTok, "DELETE", "/user/me/blocks")
	back := mqtttest.MustDial(t, n.MQTTURL, persistent)
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if s, _ := lastAlicePresence(back); s != "offline" {
			return fmt.Errorf("bob's phone, back on its session after the unblock: last presence/alice %q, want offline (her status)", s)
		}
		return nil
	})
}
