package node_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgechat/edgechat/internal/testutil/mqtttest"
	"github.com/edgechat/edgechat/node/nodetest"
)

// The status handed to a watcher alice unblocks
// (TestPresenceWatcherUnblockedDoesNotKeepAStaleStatus) goes as a
// delivery of the watcher's subscription would: with the subscription
// identifier the watcher gave it (MQTT 5 [MQTT-3.3.4-3]; a client that
// routes messages by it dropped the status, or gave it to no one).
// Before, the handed status carried no identifier.
func TestPresenceHandedOnUnblockCarriesTheSubscription(t *testing.T) {
	n := nodetest.StartNode(t)
	aliceTok, bobTok := n.NewUser(t, "alice"), n.NewUser(t, "bob")
	if st := api(t, n, aliceTok, "POST", "/user/me/contacts", map[string]string{"uid": "bob"}, nil); st/100 != 2 {
		t.Fatalf("add contact: %d", st)
	}
	bob := mustConnectV5(t, n.MQTTURL, "bob", "phone", bobTok)
	subID := 7
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if sa, err := bob.Subscribe(ctx, &paho.Subscribe{Properties: &paho.SubscribeProperties{SubscriptionIdentifier: &subID},
		Subscriptions: []paho.SubscribeOptions{{Topic: "presence/alice", QoS: 1}}}); err != nil || sa == nil || sa.Reasons[0] >= 0x80 {
		t.Fatalf("bob subscribes with an identifier: %v %+v", err, sa)
	}
	alice := mustConnectV5(t, n.MQTTURL, "alice", "phone", aliceTok)
	alice.Pub(t, "presence/alice/heartbeat", 0, "")
	last := func(c *mqtttest.Client) (string, []int) {
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
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if s, _ := last(bob); s != "online" {
			return fmt.Errorf("bob's last presence/alice: %q, want online", s)
		}
		return nil
	})
	if st := api(t, n, aliceTok, "POST", "/user/me/blocks", map[string]string{"uid": "bob"}, nil); st/100 != 2 {
		t.Fatalf("block: %d", st)
	}
	_ = alice.Disconnect(&paho.Disconnect{})
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		var p struct{ Status string }
		if st := api(t, n, aliceTok, "GET", "/presence/alice", nil, &p); st != 200 || p.Status != "offline" {
			return fmt.Errorf("alice's presence after she left: %d %+v", st, p)
		}
		return nil
	})
	if st := api(t, n, aliceTok, "DELETE", "/user/me/blocks/bob", nil, nil); st/100 != 2 {
		t.Fatalf("unblock: %d", st)
	}
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if s, ids := last(bob); s != "offline" || len(ids) != 1 || ids[0] != subID {
			return fmt.Errorf("bob, unblocked: last presence/alice %q with subscription identifiers %v, want offline with [%d]", s, ids, subID)
		}
		return nil
	})
}
