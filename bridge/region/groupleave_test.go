package region_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"

	"github.com/edgechat/edgechat/internal/testutil/mqtttest"
	"github.com/edgechat/edgechat/node/nodetest"
)

type groupEvent struct {
	Type string `json:"type"`
	Data struct {
		GID  string   `json:"gid"`
		UID  string   `json:"uid"`
		UIDs []string `json:"uids"`
		Role string   `json:"role"`
		By   string   `json:"by"`
		Name string   `json:"name"`
	} `json:"data"`
}

func (e groupEvent) String() string {
	return fmt.Sprintf("%s gid=%s uid=%s uids=%v role=%s by=%s name=%s", e.Type, e.Data.GID, e.Data.UID, e.Data.UIDs, e.Data.Role, e.Data.By, e.Data.Name)
}

// nextEvent is uid's next event on user/{uid}/events.
func nextEvent(t *testing.T, c *mqtttest.Client, uid string) groupEvent {
	t.Helper()
	m := nextOn(t, c, "user/"+uid+"/events")
	var e groupEvent
	if err := json.Unmarshal(m.Payload, &e); err != nil {
		t.Fatalf("event %q: %v", m.Payload, err)
	}
	return e
}

// bob of us leaves a group of eu by himself, with the endpoint a local
// member leaves by: he is out of us's mirror at once (dave, in us, gets
// the event), and stays out while the request waits for a cut link,
// even when a state of the group that still lists him arrives from eu;
// once the link is back eu removes him (alice gets the event from
// bob@us) and us's mirror follows. bob may not remove dave from the
// mirror; alice may add bob again.
func TestRemoteMemberLeaves(t *testing.T) {
	eu, us := startRegions(t, 1, "eu", "us", nil)
	aliceTok := eu.newUser(t, "alice")
	bobTok, daveTok := us.newUser(t, "bob"), us.newUser(t, "dave")
	gid := newGroupAcross(t, eu, aliceTok, []string{"bob@us", "dave@us"}, us, bobTok, []string{"alice@eu", "bob", "dave"})
	mirror := gid + "@eu"
	alice := connect(t, eu.nodes[0], "alice", "phone", aliceTok)
	alice.MustSub(t, "user/alice/events", "group/"+gid+"/newMessage")
	dave := connect(t, us.nodes[0], "dave", "phone", daveTok)
	dave.MustSub(t, "user/dave/events", "group/"+mirror+"/newMessage")
	bob := connect(t, us.nodes[0], "bob", "phone", bobTok)
	bob.MustSub(t, "user/bob/events", "group/"+mirror+"/newMessage")

	if code := call(t, us.nodes[0], bobTok, "DELETE", "/user/groups/"+mirror+"/members/dave", nil, nil); code != http.StatusForbidden {
		t.Fatalf("bob removes dave from the mirror: %d", code)
	}
	// us's link into eu is cut: the request waits in us's outbox.
	eu.in.setCut(true)
	if code := call(t, us.nodes[0], bobTok, "DELETE", "/user/groups/"+mirror+"/members/bob", nil, nil); code != http.StatusNoContent {
		t.Fatalf("bob leaves %s: %d", mirror, code)
	}
	if code := call(t, us.nodes[0], bobTok, "GET", "/user/groups/"+mirror, nil, nil); code != http.StatusNotFound {
		t.Fatalf("bob still sees %s: %d", mirror, code)
	}
	for _, c := range []struct {
		cl  *mqtttest.Client
		uid string
	}{{dave, "dave"}, {bob, "bob"}} {
		if e := nextEvent(t, c.cl, c.uid); e.Type != "group.member_removed" || e.Data.GID != mirror || e.Data.UID != "bob" || e.Data.By != "bob" {
			t.Fatalf("%s got %v", c.uid, e)
		}
	}
	if got, err := us.nodes[0].Node.Region.Backlog("eu"); err != nil || got != 1 {
		t.Fatalf("us's backlog to eu: %d, %v; want the leave", got, err)
	}

	// eu, not told yet, renames the group: its state still lists bob@us.
	if code := call(t, eu.nodes[0], aliceTok, "PATCH", "/user/groups/"+gid, map[string]any{"name": "renamed"}, nil); code != http.StatusOK {
		t.Fatalf("rename: %d", code)
	}
	if e := nextEvent(t, dave, "dave"); e.Type != "group.updated" || e.Data.Name != "renamed" || e.Data.By != "alice@eu" {
		t.Fatalf("dave got %v", e)
	}
	if e := nextEvent(t, alice, "alice"); e.Type != "group.updated" {
		t.Fatalf("alice got %v", e)
	}
	waitMirror(t, us, daveTok, mirror, []string{"alice@eu", "dave"}) // bob stays out
	if code := call(t, us.nodes[0], bobTok, "GET", "/user/groups/"+mirror, nil, nil); code != http.StatusNotFound {
		t.Fatalf("bob is back in %s after a state from before his leave: %d", mirror, code)
	}

	eu.in.setCut(false)
	if e := nextEvent(t, alice, "alice"); e.Type != "group.member_removed" || e.Data.GID != gid || e.Data.UID != "bob@us" || e.Data.By != "bob@us" {
		t.Fatalf("alice got %v", e)
	}
	waitMirror(t, eu, aliceTok, gid, []string{"alice", "dave@us"})
	// The next message reaches dave, not bob.
	if code, _ := alice.Pub(t, "group/"+gid+"/newMessage", 1, textMsg("a1", "after bob left")); code != 0 {
		t.Fatalf("PUBACK %#x", code)
	}
	if e := nextGroup(t, dave, "group/"+mirror+"/newMessage"); e.Body != "after bob left" {
		t.Fatalf("dave got %+v", e)
	}
	// alice adds bob again: the pending leave ended with eu's state
	// without him, and the new state brings him back.
	if code := call(t, eu.nodes[0], aliceTok, "POST", "/user/groups/"+gid+"/members", map[string]any{"uid": "bob@us"}, nil); code != http.StatusOK {
		t.Fatalf("add bob@us again: %d", code)
	}
	waitMirror(t, us, daveTok, mirror, []string{"alice@eu", "bob", "dave"})
	if e := nextEvent(t, bob, "bob"); e.Type != "group.member_added" || e.Data.UID != "bob" || e.Data.By != "alice@eu" {
		t.Fatalf("bob got %v", e)
	}
	for _, m := range bob.Received("group/" + mirror + "/newMessage") {
		t.Fatalf("bob got a message of the group he left: %s", m.Payload)
	}
	nodetest.CheckFor(t, 20e9, 20e6, func() error {
		for _, r := range []*region{eu, us} {
			other := map[string]string{"eu": "us", "us": "eu"}[r.name]
			if got, err := r.nodes[0].Node.Region.Backlog(other); err != nil || got != 0 {
				return fmt.Errorf("%s's backlog to %s: %d, %v", r.name, other, got, err)
			}
		}
		return nil
	})
	if n := counter(t, eu.nodes[0], "edgechat_region_link_received_total", `result="group_leave"`); n != 1 {
		t.Fatalf("eu counted %v leaves", n)
	}
}
