package node_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgechat/edgechat/internal/testutil/mqtttest"
	"github.com/edgechat/edgechat/node/nodetest"
)

// A watcher's persistent session that waits offline while alice lifts
// her block of him still holds presence/alice, whose deliveries were
// refused while the block held: when his phone comes back (session
// present, no new subscription, so no retained message) it must be
// handed alice's status as it is, as a connected session is
// (TestPresenceWatcherUnblockedDoesNotKeepAStaleStatus). Before, it
// kept "online", her status before the block, until she next changed.
func TestPresenceOfflineWatcherUnblockedGetsTheStatusWhenItComesBack(t *testing.T) {
	n := nodetest.StartNode(t)
	aliceTok, bobTok := n.NewUser(t, "alice"), n.NewUser(t, "bob")
	if st := api(t, n, aliceTok, "POST", "/user/me/contacts", map[string]string{"uid": "bob"}, nil); st/100 != 2 {
		t.Fatalf("add contact: %d", st)
	}
	persistent := mqtttest.Options{ClientID: "bob/phone", Username: "bob", Password: bobTok, KeepSession: true, SessionExpiry: 600}
	bob := mqtttest.MustDial(t, n.MQTTURL, persistent)
	bob.MustSub(t, "presence/alice")
	alice := mustConnectV5(t, n.MQTTURL, "alice", "phone", aliceTok)
	alice.Pub(t, "presence/alice/heartbeat", 0, "")
	last := func(c *mqtttest.Client) string {
		got := c.Received("presence/alice")
		if len(got) == 0 {
			return ""
		}
		var p struct{ Status string }
		_ = json.Unmarshal(got[len(got)-1].Payload, &p)
		return p.Status
	}
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if s := last(bob); s != "online" {
			return fmt.Errorf("bob's last presence/alice: %q, want online", s)
		}
		return nil
	})
	if st := api(t, n, aliceTok, "POST", "/user/me/blocks", map[string]string{"uid": "bob"}, nil); st/100 != 2 {
		t.Fatalf("block: %d", st)
	}
	_ = bob.Conn.Close() // lost: the session waits offline, subscribed
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if n.Broker.UserConnections("bob") != 0 {
			return errors.New("bob's connection is still counted")
		}
		return nil
	})
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
	back := mqtttest.MustDial(t, n.MQTTURL, persistent)
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if s := last(back); s != "offline" {
			return fmt.Errorf("bob's phone, back on its session after the unblock: last presence/alice %q, want offline (her status)", s)
		}
		return nil
	})
}
