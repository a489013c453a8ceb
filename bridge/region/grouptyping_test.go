package region_test

import (
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/testutil/mqtttest"
	"github.com/edgechat/edgechat/node/nodetest"
)

// newGroupAcross creates, as owner (token tok) in home, a group with
// members, and waits until every region in mirrors lists mirrorMembers
// (sorted, as that region names them) in its mirror, read by the user of
// token mtok. It returns the group's ID at home.
func newGroupAcross(t *testing.T, home *region, tok string, members []string, other *region, mtok string, mirrorMembers []string) string {
	t.Helper()
	g := newGroup(t, home.nodes[0], tok, "across", members...)
	waitMirror(t, other, mtok, g.GroupID+"@"+home.name, mirrorMembers)
	return g.GroupID
}

// waitMirror waits until r's mirror lists want (sorted), read as tok.
func waitMirror(t *testing.T, r *region, tok, mirror string, want []string) {
	t.Helper()
	nodetest.CheckFor(t, 20e9, 20e6, func() error {
		var out struct {
			Members []struct {
				UserID string `json:"userId"`
			} `json:"members"`
		}
		if code := call(t, r.nodes[0], tok, "GET", "/user/groups/"+mirror+"/members?limit=1000", nil, &out); code != http.StatusOK {
			return fmt.Errorf("members of %s in %s: %d", mirror, r.name, code)
		}
		var ids []string
		for _, m := range out.Members {
			ids = append(ids, m.UserID)
		}
		slices.Sort(ids)
		if !slices.Equal(ids, want) {
			return fmt.Errorf("members of %s in %s: %v, want %v", mirror, r.name, ids, want)
		}
		return nil
	})
}

// Group typing crosses the link both ways while it is up: alice (eu,
// the home) types and bob in us sees it on the mirror's topic from
// alice@eu; bob types on the mirror and alice and carol at home see it
// from bob@us, dave in us sees it locally, once (nothing comes back
// over the link); typing in a group without members in us never
// crosses (us's counter counts only the group with members); while the
// link is down typing is dropped, not queued.
func TestGroupTypingAcrossRegions(t *testing.T) {
	eu, us := startRegions(t, 1, "eu", "us", nil)
	aliceTok, carolTok := eu.newUser(t, "alice"), eu.newUser(t, "carol")
	bobTok, daveTok := us.newUser(t, "bob"), us.newUser(t, "dave")
	gid := newGroupAcross(t, eu, aliceTok, []string{"carol", "bob@us", "dave@us"}, us, bobTok, []string{"alice@eu", "bob", "carol@eu", "dave"})
	local := newGroup(t, eu.nodes[0], aliceTok, "eu only", "carol")
	home, mirror := "group/"+gid+"/typing", "group/"+gid+"@eu/typing"

	alice := connect(t, eu.nodes[0], "alice", "phone", aliceTok)
	carol := connect(t, eu.nodes[0], "carol", "phone", carolTok)
	bob := connect(t, us.nodes[0], "bob", "phone", bobTok)
	dave := connect(t, us.nodes[0], "dave", "phone", daveTok)
	alice.MustSub(t, home, "group/"+local.GroupID+"/typing")
	carol.MustSub(t, home)
	bob.MustSub(t, mirror)
	dave.MustSub(t, mirror)

	// Typing in the group of eu only first: it would reach us's link
	// before the later typing, on the same connection.
	alice.Pub(t, "group/"+local.GroupID+"/typing", 0, `{"state":"typing"}`)
	got := retry(t, func() { alice.Pub(t, home, 0, `{"state":"typing"}`) }, bob, mirror)
	if string(got.Payload) != `{"state":"typing","from":"alice@eu"}` || got.Properties.User.Get("from") != "alice@eu" {
		t.Fatalf("bob got %s %+v", got.Payload, got.Properties.User)
	}
	if got := nextOn(t, dave, mirror); string(got.Payload) != `{"state":"typing","from":"alice@eu"}` {
		t.Fatalf("dave got %s", got.Payload)
	}
	// From here on, skip the further copies of alice's typing the retry
	// may have sent.
	next := func(c *mqtttest.Client, topic string) string {
		t.Helper()
		for {
			m := nextOn(t, c, topic)
			if f := m.Properties.User.Get("from"); f != "alice" && f != "alice@eu" {
				return string(m.Payload)
			}
		}
	}

	// eu's link subscribes to us on its own connection: bob's typing is
	// retried as well until it crosses.
	sent := 0
	want := `{"state":"stopped","from":"bob@us"}`
	if got := retryFrom(t, func() { sent++; bob.Pub(t, mirror, 0, `{"state":"stopped"}`) }, alice, home, "bob@us"); got != want {
		t.Fatalf("alice got %s, want %s", got, want)
	}
	if got := next(carol, home); got != want {
		t.Fatalf("carol got %s, want %s", got, want)
	}
	if got := next(dave, mirror); got != `{"state":"stopped","from":"bob"}` {
		t.Fatalf("dave got %s", got)
	}
	// Crossings counted where they arrived, each once to every member:
	// us received alice's typing in the shared group (however many the
	// retry sent), none of the eu only group; eu received bob's, and
	// nothing came back to us.
	from := func(c *mqtttest.Client, who string) int {
		n := 0
		for _, m := range c.Received("") {
			if m.Properties.User.Get("from") == who {
				n++
			}
		}
		return n
	}
	nodetest.CheckFor(t, 20e9, 20e6, func() error {
		eun := counter(t, eu.nodes[0], "edgechat_region_link_ephemeral_total", `kind="group_typing"`)
		usn := counter(t, us.nodes[0], "edgechat_region_link_ephemeral_total", `kind="group_typing"`)
		if a, c, d := from(alice, "bob@us"), from(carol, "bob@us"), from(dave, "bob"); eun != float64(a) || a != c || d != sent || a > sent {
			return fmt.Errorf("eu received %v group typing; of bob's %d, alice got %d, carol %d, dave %d", eun, sent, a, c, d)
		}
		if b, d := from(bob, "alice@eu"), from(dave, "alice@eu"); usn != float64(b) || b != d {
			return fmt.Errorf("us received %v group typing; bob got %d of alice's, dave %d", usn, b, d)
		}
		return nil
	})
	if n := counter(t, us.nodes[0], "edgechat_region_link_ephemeral_total", `kind="invalid"`) +
		counter(t, eu.nodes[0], "edgechat_region_link_ephemeral_total", `kind="invalid"`); n != 0 {
		t.Fatalf("%v ephemeral messages refused", n)
	}

	// The links go down: bob's typing is dropped, not queued.
	a0 := from(alice, "bob@us")
	us.in.setCut(true)
	eu.in.setCut(true)
	bob.Pub(t, mirror, 0, `{"state":"typing"}`)
	for next(dave, mirror) != `{"state":"typing","from":"bob"}` { // handled in us
	}
	us.in.setCut(false)
	eu.in.setCut(false)
	// Once bob's typing crosses again, the one of the outage never came.
	nodetest.CheckFor(t, 20e9, 200e6, func() error {
		bob.Pub(t, mirror, 0, `{"state":"stopped"}`)
		if n := from(alice, "bob@us"); n <= a0 {
			return fmt.Errorf("alice got nothing more from bob")
		}
		return nil
	})
	for _, m := range alice.Received(home) {
		if string(m.Payload) == `{"state":"typing","from":"bob@us"}` {
			t.Fatalf("typing sent while the links were down reached alice: %s", m.Payload)
		}
	}
}

// retryFrom publishes until c gets a message on topic from sender (user
// property from), skipping others, and returns its payload.
func retryFrom(t *testing.T, pub func(), c *mqtttest.Client, topic, sender string) string {
	t.Helper()
	var got string
	nodetest.CheckFor(t, 20e9, 200e6, func() error {
		pub()
		deadline := time.Now().Add(150 * time.Millisecond)
		for time.Now().Before(deadline) {
			m, ok := c.TryNext()
			if !ok {
				time.Sleep(5 * time.Millisecond) // polling a client's inbox, not waiting for a state
				continue
			}
			if m.Topic == topic && m.Properties.User.Get("from") == sender {
				got = string(m.Payload)
				return nil
			}
		}
		return fmt.Errorf("nothing on %s from %s", topic, sender)
	})
	return got
}

// With three nodes a side and the users on followers that are not node
// 0: the typing crosses through the route tables (the other region's
// link connection lands on node 0, the links run on the leaders), both
// ways.
func TestGroupTypingThreeNodeRegions(t *testing.T) {
	if testing.Short() {
		t.Skip("six nodes")
	}
	eu, us := startRegions(t, 3, "eu", "us", nil)
	aliceTok, bobTok := eu.newUser(t, "alice"), us.newUser(t, "bob")
	gid := newGroupAcross(t, eu, aliceTok, []string{"bob@us"}, us, bobTok, []string{"alice@eu", "bob"})
	home, mirror := "group/"+gid+"/typing", "group/"+gid+"@eu/typing"
	away := func(r *region) *nodetest.Node { // neither the leader nor node 0
		l := r.leader(t)
		for _, n := range r.nodes[1:] {
			if n != l {
				return n
			}
		}
		t.Fatal("no such node")
		return nil
	}
	alice := connect(t, away(eu), "alice", "phone", aliceTok)
	bob := connect(t, away(us), "bob", "phone", bobTok)
	alice.MustSub(t, home)
	bob.MustSub(t, mirror)
	got := retry(t, func() { alice.Pub(t, home, 0, `{"state":"typing"}`) }, bob, mirror)
	if string(got.Payload) != `{"state":"typing","from":"alice@eu"}` {
		t.Fatalf("bob got %s", got.Payload)
	}
	fromBob := retryFrom(t, func() { bob.Pub(t, mirror, 0, `{"state":"stopped"}`) }, alice, home, "bob@us")
	if fromBob != `{"state":"stopped","from":"bob@us"}` {
		t.Fatalf("alice got %s", fromBob)
	}
}
