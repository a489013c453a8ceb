package region_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgechat/edgechat/internal/testutil/mqtttest"
	"github.com/edgechat/edgechat/node/nodetest"
)

// waitLast checks until the last message c got on topic has status want.
func waitLast(t *testing.T, c *mqtttest.Client, topic, want, why string) {
	t.Helper()
	nodetest.CheckFor(t, 15*time.Second, 20*time.Millisecond, func() error {
		got := c.Received(topic)
		s := ""
		if len(got) > 0 {
			var p struct{ Status string }
			_ = json.Unmarshal(got[len(got)-1].Payload, &p)
			s = p.Status
		}
		if s != want {
			return fmt.Errorf("%s: the watcher's last %s is %q, want %q (the status now)", why, topic, s, want)
		}
		return nil
	})
}

// A watcher in us whose subscription to presence/alice@eu was granted
// while alice@eu had him in her contacts keeps it when she takes him out
// (us refuses its deliveries meanwhile). When she adds him back (the
// contact the link carries to us) or the first direct message between
// them is stored, the last status his client got must not be one she
// left meanwhile, as for a local user (protocol.md, Presence
// visibility; regions.md: the rule is the viewer's region's).
func TestPresenceOfAnotherRegionsUserIsHandedWhenVisibleAgain(t *testing.T) {
	eu, us := startRegions(t, 1, "eu", "us", nil)
	noAdmins(t, eu, us)
	aliceTok, bobTok := eu.newUser(t, "alice"), us.newUser(t, "bob")
	contact := func(method string, want int) {
		t.Helper()
		path, body := "/user/me/contacts", any(map[string]string{"uid": "bob@us"})
		if method == "DELETE" {
			path, body = path+"/bob@us", nil
		}
		if c := call(t, eu.nodes[0], aliceTok, method, path, body, nil); c != want {
			t.Fatalf("%s contact bob@us: %d, want %d", method, c, want)
		}
	}
	contact("POST", http.StatusCreated)
	seesPresence(t, us.nodes[0], bobTok, "alice@eu", true)
	bob := connect(t, us.nodes[0], "bob", "phone", bobTok)
	bob.MustSub(t, "presence/alice@eu")
	alice := connect(t, eu.nodes[0], "alice", "phone", aliceTok)
	alice.Pub(t, "presence/alice/heartbeat", 0, "")
	waitLast(t, bob, "presence/alice@eu", "online", "a contact")

	// She takes him out, leaves, adds him back.
	contact("DELETE", http.StatusNoContent)
	seesPresence(t, us.nodes[0], bobTok, "alice@eu", false)
	_ = alice.Disconnect(&paho.Disconnect{})
	nodetest.CheckFor(t, 15*time.Second, 20*time.Millisecond, func() error {
		var p struct{ Status string }
		if c := call(t, eu.nodes[0], aliceTok, "GET", "/presence/alice", nil, &p); c != 200 || p.Status != "offline" {
			return fmt.Errorf("alice: %d %+v", c, p)
		}
		return nil
	})
	contact("POST", http.StatusCreated)
	waitLast(t, bob, "presence/alice@eu", "offline", "a contact again")

	// She takes him out again, comes back, and writes him first.
	contact("DELETE", http.StatusNoContent)
	seesPresence(t, us.nodes[0], bobTok, "alice@eu", false)
	alice = connect(t, eu.nodes[0], "alice", "laptop", aliceTok)
	alice.Pub(t, "presence/alice/heartbeat", 0, "")
	nodetest.CheckFor(t, 15*time.Second, 20*time.Millisecond, func() error {
		var p struct{ Status string }
		if c := call(t, eu.nodes[0], aliceTok, "GET", "/presence/alice", nil, &p); c != 200 || p.Status != "online" {
			return fmt.Errorf("alice: %d %+v", c, p)
		}
		return nil
	})
	if code, ack := alice.Pub(t, "user/bob@us/newMessage", 1, textMsg("a1", "hi")); code != 0 {
		t.Fatalf("PUBACK %#x %q", code, ack.Properties.ReasonString)
	}
	waitLast(t, bob, "presence/alice@eu", "online", "the first direct message")
}
