package node_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgechat/edgechat/node/nodetest"
)

// A watcher whose subscription to presence/{uid} was granted before uid
// blocked them keeps it (deliveries are refused while the block holds);
// once uid lifts the block, the last status the watcher got must not be
// one uid left meanwhile: protocol.md says the last presence/{uid} a
// client got is the current one.
func TestPresenceWatcherUnblockedDoesNotKeepAStaleStatus(t *testing.T) {
	n := nodetest.StartNode(t)
	aliceTok, bobTok := n.NewUser(t, "alice"), n.NewUser(t, "bob")
	if st := api(t, n, aliceTok, "POST", "/user/me/contacts", map[string]string{"uid": "bob"}, nil); st/100 != 2 {
		t.Fatalf("add contact: %d", st)
	}
	bob := mustConnectV5(t, n.MQTTURL, "bob", "phone", bobTok)
	bob.MustSub(t, "presence/alice")
	alice := mustConnectV5(t, n.MQTTURL, "alice", "phone", aliceTok)
	alice.Pub(t, "presence/alice/heartbeat", 0, "")
	last := func() string {
		got := bob.Received("presence/alice")
		if len(got) == 0 {
			return ""
		}
		var p struct{ Status string }
		_ = json.Unmarshal(got[len(got)-1].Payload, &p)
		return p.Status
	}
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if s := last(); s != "online" {
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
		if s := last(); s != "offline" {
			return fmt.Errorf("bob, unblocked, still has alice %q as his last presence/alice (her status: offline, every device gone)", s)
		}
		return nil
	})
	// Likewise a watcher alice took out of her contacts and adds back:
	// she came back meanwhile, and he must not keep her "offline".
	if st := api(t, n, aliceTok, "DELETE", "/user/me/contacts/bob", nil, nil); st/100 != 2 {
		t.Fatalf("remove contact: %d", st)
	}
	alice = mustConnectV5(t, n.MQTTURL, "alice", "laptop", aliceTok)
	alice.Pub(t, "presence/alice/heartbeat", 0, "")
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		var p struct{ Status string }
		if st := api(t, n, aliceTok, "GET", "/presence/alice", nil, &p); st != 200 || p.Status != "online" {
			return fmt.Errorf("alice's presence after she came back: %d %+v", st, p)
		}
		return nil
	})
	if st := api(t, n, aliceTok, "POST", "/user/me/contacts", map[string]string{"uid": "bob"}, nil); st/100 != 2 {
		t.Fatalf("add contact again: %d", st)
	}
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if s := last(); s != "online" {
			return fmt.Errorf("bob, a contact again, still has alice %q as his last presence/alice (her status: online)", s)
		}
		return nil
	})
}
