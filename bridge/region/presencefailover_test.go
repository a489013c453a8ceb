package region_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/edgechat/edgechat/node/nodetest"
)

// While the link to us is down, bob@us is "unknown" in eu with the last
// seen eu's link last received: a leader change of eu meanwhile (the
// new leader's link has received nothing of bob yet) keeps it, it does
// not retain bob's presence again without it.
func TestRemoteLastSeenKeptAcrossALeaderChangeWhileTheLinkIsDown(t *testing.T) {
	if testing.Short() {
		t.Skip("six nodes")
	}
	eu, us := startRegions(t, 3, "eu", "us", nil)
	aliceTok, bobTok := eu.newUser(t, "alice"), us.newUser(t, "bob")
	en := eu.follower(t)
	alice := connect(t, en, "alice", "phone", aliceTok)
	alice.MustSub(t, "user/alice/#")
	if code, ack := alice.Pub(t, "user/bob@us/newMessage", 1, textMsg("c1", "hi bob")); code != 0 {
		t.Fatalf("PUBACK %#x %q", code, ack.Properties.ReasonString)
	}
	alice.MustSub(t, "presence/bob@us")
	bob := connect(t, us.follower(t), "bob", "phone", bobTok)
	bob.MustSub(t, "user/bob/#")
	presenceOf(t, alice, "presence/bob@us", "online")

	type presence struct {
		Status   string    `json:"status"`
		LastSeen time.Time `json:"lastSeen"`
	}
	seen := func(n *nodetest.Node, status string) time.Time {
		t.Helper()
		var p presence
		nodetest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
			p = presence{}
			if c := call(t, n, aliceTok, "GET", "/presence/bob@us", nil, &p); c != 200 || p.Status != status || p.LastSeen.IsZero() {
				return fmt.Errorf("GET /presence/bob@us on %s: %d %+v, want %s with bob's last seen", n.HTTPURL, c, p, status)
			}
			return nil
		})
		return p.LastSeen
	}
	online := seen(en, "online")

	// The link goes down: bob is unknown, last seen when eu last heard.
	us.in.setCut(true)
	if got := seen(en, "unknown"); !got.Equal(online) {
		t.Fatalf("unknown with last seen %v, want %v", got, online)
	}
	// eu's leader goes; the next one runs the link (still down). us's
	// link into eu is pointed at alice's node, which stays.
	lead := eu.leader(t)
	before := len(alice.Received("presence/bob@us"))
	eu.in.setTarget(en.MQTTAddr())
	if err := lead.Stop(); err != nil {
		t.Fatal(err)
	}
	next := eu.leader(t)
	if next == lead {
		t.Fatal("the stopped node still leads")
	}
	// The new leader's link fails to connect and shows bob unknown again:
	// alice gets that, and it is what every node answers.
	nodetest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		if len(alice.Received("presence/bob@us")) == before {
			return fmt.Errorf("nothing from eu's new leader about bob yet")
		}
		return nil
	})
	got := alice.Received("presence/bob@us")
	var p presence
	if err := json.Unmarshal(got[len(got)-1].Payload, &p); err != nil || p.Status != "unknown" || !p.LastSeen.Equal(online) {
		t.Fatalf("after eu's leader changed, link still down: alice got %s, want unknown, last seen %v", got[len(got)-1].Payload, online)
	}
	for i, n := range []*nodetest.Node{en, next} {
		var p presence
		if c := call(t, n, aliceTok, "GET", "/presence/bob@us", nil, &p); c != 200 || p.Status != "unknown" || !p.LastSeen.Equal(online) {
			t.Fatalf("after eu's leader changed, link still down: GET /presence/bob@us on node %d: %d %+v, want unknown, last seen %v", i, c, p, online)
		}
	}
}
