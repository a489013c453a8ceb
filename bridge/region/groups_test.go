package region_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"testing"

	"github.com/edgechat/edgechat/internal/testutil/mqtttest"
	"github.com/edgechat/edgechat/node/nodetest"
)

type groupEnvelope struct {
	ID    string `json:"id"`
	From  string `json:"from"`
	Group string `json:"group"`
	Body  string `json:"body"`
}

func groupHistory(t *testing.T, n *nodetest.Node, token, gid string) []groupEnvelope {
	t.Helper()
	var out struct {
		Messages []groupEnvelope `json:"messages"`
	}
	if code := call(t, n, token, "GET", "/chat/history?limit=200&group="+gid, nil, &out); code != http.StatusOK {
		t.Fatalf("history of %s: %d", gid, code)
	}
	return out.Messages
}

func nextGroup(t *testing.T, c *mqtttest.Client, topic string) groupEnvelope {
	t.Helper()
	m := c.Next(t)
	var e groupEnvelope
	if err := json.Unmarshal(m.Payload, &e); err != nil || m.Topic != topic {
		t.Fatalf("got %s %q (%v), want a message on %s", m.Topic, m.Payload, err, topic)
	}
	return e
}

// A group homed in eu with members in us: messages both ways reach every
// member of both regions with one ID; each message crosses the link once
// (not once per member, and never back to the region it came from); both
// regions keep the history; a membership change reaches the other region.
func TestGroupAcrossRegions(t *testing.T) { groupAcrossRegions(t, 1) }

// The same with regions of three nodes each: the links run on each
// region's leader, clients and the other region's link reach node 0.
func TestGroupAcrossThreeNodeRegions(t *testing.T) { groupAcrossRegions(t, 3) }

func groupAcrossRegions(t *testing.T, size int) {
	eu, us := startRegions(t, size, "eu", "us", nil)
	aliceTok, carolTok := eu.newUser(t, "alice"), eu.newUser(t, "carol")
	bobTok, daveTok := us.newUser(t, "bob"), us.newUser(t, "dave")

	g := newGroup(t, eu.nodes[0], aliceTok, "across", "carol", "bob@us", "dave@us")
	gid, mirror := g.GroupID, g.GroupID+"@eu"
	// us gets the group's state over the link: bob sees gid@eu with
	// alice@eu among its members.
	nodetest.CheckFor(t, 20e9, 20e6, func() error {
		var out struct {
			Members []struct {
				UserID string `json:"userId"`
			} `json:"members"`
		}
		if code := call(t, us.nodes[0], bobTok, "GET", "/user/groups/"+mirror+"/members", nil, &out); code != http.StatusOK {
			return fmt.Errorf("members of %s in us: %d", mirror, code)
		}
		var ids []string
		for _, m := range out.Members {
			ids = append(ids, m.UserID)
		}
		slices.Sort(ids)
		if !slices.Equal(ids, []string{"alice@eu", "bob", "carol@eu", "dave"}) {
			return fmt.Errorf("members of %s in us: %v", mirror, ids)
		}
		return nil
	})

	alice := connect(t, eu.nodes[0], "alice", "phone", aliceTok)
	carol := connect(t, eu.nodes[0], "carol", "phone", carolTok)
	bob := connect(t, us.nodes[0], "bob", "phone", bobTok)
	dave := connect(t, us.nodes[0], "dave", "phone", daveTok)
	home, remote := "group/"+gid+"/newMessage", "group/"+mirror+"/newMessage"
	alice.MustSub(t, home)
	carol.MustSub(t, home)
	bob.MustSub(t, remote)
	dave.MustSub(t, remote)

	const n = 3
	for i := range n {
		if code, ack := alice.Pub(t, home, 1, textMsg(fmt.Sprint("a", i), fmt.Sprint("from alice ", i))); code != 0 {
			t.Fatalf("alice's PUBACK %#x %q", code, ack.Properties.ReasonString)
		}
	}
	var ids []string
	for i := range n {
		a, c := nextGroup(t, alice, home), nextGroup(t, carol, home)
		b, d := nextGroup(t, bob, remote), nextGroup(t, dave, remote)
		want := fmt.Sprint("from alice ", i)
		if a.Body != want || c.ID != a.ID || b.ID != a.ID || d.ID != a.ID {
			t.Fatalf("message %d: alice %+v carol %+v bob %+v dave %+v", i, a, c, b, d)
		}
		if a.From != "alice" || a.Group != gid || b.From != "alice@eu" || b.Group != mirror || d.From != "alice@eu" {
			t.Fatalf("message %d as eu sees it %+v, as us sees it %+v", i, a, b)
		}
		ids = append(ids, a.ID)
	}

	// bob writes to the mirror: committed in us and fanned out there,
	// then handed to eu, which fans it out and sends it nowhere else.
	if code, ack := bob.Pub(t, remote, 1, textMsg("b0", "from bob")); code != 0 {
		t.Fatalf("bob's PUBACK %#x %q", code, ack.Properties.ReasonString)
	}
	b, d := nextGroup(t, bob, remote), nextGroup(t, dave, remote)
	a, c := nextGroup(t, alice, home), nextGroup(t, carol, home)
	if b.From != "bob" || d.ID != b.ID || a.ID != b.ID || c.ID != b.ID || a.From != "bob@us" || a.Group != gid || a.Body != "from bob" {
		t.Fatalf("bob's message: bob %+v dave %+v alice %+v carol %+v", b, d, a, c)
	}
	ids = append(ids, a.ID)

	sent := func(r *region, link, kind string) float64 { // whichever node led
		var sum float64
		for _, n := range r.nodes {
			sum += counter(t, n, "edgechat_region_link_group_sent_total", `kind="`+kind+`",link="`+link+`"`)
		}
		return sum
	}
	// The counters move when the PUBACK is back, which may be after the
	// delivery.
	nodetest.CheckFor(t, 20e9, 20e6, func() error {
		if got := sent(us, "eu", "message"); got != 1 {
			return fmt.Errorf("us sent %v group messages to eu, want 1", got)
		}
		if got := sent(eu, "us", "message"); got != n {
			return fmt.Errorf("eu sent %v group messages to us, want %d", got, n)
		}
		return nil
	})

	// Both regions keep the whole conversation under the same IDs.
	for _, h := range []struct {
		r        *region
		tok, gid string
	}{{eu, carolTok, gid}, {us, daveTok, mirror}} {
		for _, n := range h.r.nodes {
			nodetest.CheckFor(t, 20e9, 20e6, func() error { // a follower applies a moment later
				var got []string
				for _, e := range groupHistory(t, n, h.tok, h.gid) {
					got = append(got, e.ID)
				}
				slices.Reverse(got) // newest first
				if !slices.Equal(got, ids) {
					return fmt.Errorf("history of %s in %s: %v, want %v", h.gid, h.r.name, got, ids)
				}
				return nil
			})
		}
	}

	// dave leaves at home: us drops him from the mirror; the next
	// message reaches bob only, still once.
	if code := call(t, eu.nodes[0], aliceTok, "DELETE", "/user/groups/"+gid+"/members/dave@us", nil, nil); code != http.StatusNoContent {
		t.Fatalf("remove dave@us: %d", code)
	}
	nodetest.CheckFor(t, 20e9, 20e6, func() error {
		if code := call(t, us.nodes[0], daveTok, "GET", "/user/groups/"+mirror, nil, nil); code != http.StatusNotFound {
			return fmt.Errorf("dave still sees %s: %d", mirror, code)
		}
		return nil
	})
	if code, _ := alice.Pub(t, home, 1, textMsg("a-last", "after dave left")); code != 0 {
		t.Fatalf("PUBACK %#x", code)
	}
	if e := nextGroup(t, bob, remote); e.Body != "after dave left" {
		t.Fatalf("bob got %+v", e)
	}
	nodetest.CheckFor(t, 20e9, 20e6, func() error {
		if got := sent(eu, "us", "message"); got != n+1 {
			return fmt.Errorf("eu sent %v group messages to us, want %d", got, n+1)
		}
		return nil
	})
	// Nothing more went either way (bob's message was not sent back to
	// us, no message was sent twice): every outbox is empty.
	nodetest.CheckFor(t, 20e9, 20e6, func() error { // the cursor commits after the PUBACK
		for _, r := range []*region{eu, us} {
			other := map[string]string{"eu": "us", "us": "eu"}[r.name]
			for _, n := range r.nodes {
				if got, err := n.Node.Region.Backlog(other); err != nil || got != 0 {
					return fmt.Errorf("%s's backlog to %s: %d, %v", r.name, other, got, err)
				}
			}
		}
		return nil
	})
	if got := sent(eu, "us", "message") + sent(us, "eu", "message"); got != n+2 {
		t.Fatalf("%v group messages crossed, want %d", got, n+2)
	}
	if code := call(t, us.nodes[0], daveTok, "GET", "/chat/history?group="+mirror, nil, nil); code != http.StatusNotFound {
		t.Fatalf("dave reads the history of a group he left: %d", code)
	}
}

// A region cut off keeps its last mirror of a group (its members still
// write to it) and catches up when the link is back: the membership
// changes and the messages of the outage arrive in commit order.
func TestGroupMembershipCatchesUpAfterOutage(t *testing.T) {
	eu, us := startRegions(t, 1, "eu", "us", nil)
	aliceTok := eu.newUser(t, "alice")
	bobTok, erinTok := us.newUser(t, "bob"), us.newUser(t, "erin")
	g := newGroup(t, eu.nodes[0], aliceTok, "outage", "bob@us")
	mirror := g.GroupID + "@eu"
	sees := func(tok string, want int) func() error {
		return func() error {
			if code := call(t, us.nodes[0], tok, "GET", "/user/groups/"+mirror, nil, nil); code != want {
				return fmt.Errorf("GET %s: %d, want %d", mirror, code, want)
			}
			return nil
		}
	}
	nodetest.CheckFor(t, 20e9, 20e6, sees(bobTok, http.StatusOK))

	us.in.setCut(true)
	alice := connect(t, eu.nodes[0], "alice", "phone", aliceTok)
	if code, _ := alice.Pub(t, "group/"+g.GroupID+"/newMessage", 1, textMsg("o1", "while cut, bob still in")); code != 0 {
		t.Fatalf("PUBACK %#x", code)
	}
	if code := call(t, eu.nodes[0], aliceTok, "POST", "/user/groups/"+g.GroupID+"/members", map[string]any{"uid": "erin@us"}, nil); code != http.StatusOK {
		t.Fatalf("add erin@us: %d", code)
	}
	if code := call(t, eu.nodes[0], aliceTok, "DELETE", "/user/groups/"+g.GroupID+"/members/bob@us", nil, nil); code != http.StatusNoContent {
		t.Fatalf("remove bob@us: %d", code)
	}
	if code, _ := alice.Pub(t, "group/"+g.GroupID+"/newMessage", 1, textMsg("o2", "while cut, erin in")); code != 0 {
		t.Fatalf("PUBACK %#x", code)
	}
	// us knows nothing yet: bob is still a member there and may write
	// (committed in us; eu refuses it once it arrives, bob being gone).
	if err := sees(bobTok, http.StatusOK)(); err != nil {
		t.Fatal(err)
	}
	if err := sees(erinTok, http.StatusNotFound)(); err != nil {
		t.Fatal(err)
	}
	if got := groupHistory(t, us.nodes[0], bobTok, mirror); len(got) != 0 {
		t.Fatalf("us got %d messages through a cut link", len(got))
	}

	us.in.setCut(false)
	nodetest.CheckFor(t, 20e9, 20e6, func() error {
		if err := sees(bobTok, http.StatusNotFound)(); err != nil {
			return err
		}
		return sees(erinTok, http.StatusOK)()
	})
	// erin's history in us holds both messages of the outage, eu's IDs,
	// in order: the first was committed in eu while bob was a member, the
	// mirror keeps what reached it.
	var bodies []string
	nodetest.CheckFor(t, 20e9, 20e6, func() error {
		bodies = bodies[:0]
		for _, e := range groupHistory(t, us.nodes[0], erinTok, mirror) {
			bodies = append(bodies, e.Body)
		}
		if len(bodies) != 2 {
			return fmt.Errorf("erin's history %v", bodies)
		}
		return nil
	})
	if bodies[0] != "while cut, erin in" || bodies[1] != "while cut, bob still in" {
		t.Fatalf("erin's history (newest first) %v", bodies)
	}
}
