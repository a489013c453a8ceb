package node_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/testutil/delayproxy"
	"github.com/edgechat/edgechat/internal/testutil/mqtttest"
	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
)

// crossRegion is alice@eu and carol@eu, and bob@us, who exchanged
// direct messages with alice both ways and are each other's contacts.
type crossRegion struct {
	eu, us                     *nodetest.Node
	intoEU                     *delayproxy.Proxy // us's link to eu
	intoUS                     *delayproxy.Proxy // eu's link to us
	aliceTok, carolTok, bobTok string
	alice                      *mqtttest.Client
	team                       string // alice's group of eu, with carol and bob@us, where bob wrote
}

func startCrossRegion(t *testing.T) crossRegion {
	t.Helper()
	var c crossRegion
	c.eu, c.us, c.intoEU, c.intoUS = nodetest.StartRegionPairProxied(t, "eu", "us", nodetest.WithConfig(func(c *node.Config) { c.AccountDeleteGrace = 0 }))
	c.aliceTok, c.carolTok = c.eu.NewUser(t, "alice"), c.eu.NewUser(t, "carol")
	c.bobTok = c.us.NewUser(t, "bob")
	if st := api(t, c.eu, c.aliceTok, "POST", "/user/me/contacts", map[string]string{"uid": "bob@us"}, nil); st != 201 && st != 200 {
		t.Fatalf("alice adds bob@us: %d", st)
	}
	if st := api(t, c.us, c.bobTok, "POST", "/user/me/contacts", map[string]string{"uid": "alice@eu"}, nil); st != 201 && st != 200 {
		t.Fatalf("bob adds alice@eu: %d", st)
	}
	c.alice = mustConnectV5(t, c.eu.MQTTURL, "alice", "laptop", c.aliceTok)
	bob := mustConnectV5(t, c.us.MQTTURL, "bob", "phone", c.bobTok)
	for i := 0; i < 3; i++ {
		if code, _ := c.alice.Pub(t, "user/bob@us/newMessage", 1, textMsg(fmt.Sprintf("a%d", i), "hi bob")); code != 0 {
			t.Fatalf("alice → bob@us: %#x", code)
		}
		if code, _ := bob.Pub(t, "user/alice@eu/newMessage", 1, textMsg(fmt.Sprintf("b%d", i), "hi alice")); code != 0 {
			t.Fatalf("bob → alice@eu: %#x", code)
		}
	}
	if code, _ := c.alice.Pub(t, "user/carol/newMessage", 1, textMsg("c0", "hi carol")); code != 0 {
		t.Fatalf("alice → carol: %#x", code)
	}
	c.team = createGroup(t, c.eu, c.aliceTok, "team", "carol", "bob@us").GroupID
	checkFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		code, _ := bob.Pub(t, "group/"+c.team+"@eu/newMessage", 1, textMsg("g-b", "from bob to the team"))
		if code != 0 {
			return fmt.Errorf("bob → team@eu: %#x (the mirror not in us yet?)", code)
		}
		return nil
	})
	checkFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		if n := len(c.historyWithBob(t)); n != 6 {
			return fmt.Errorf("alice's history with bob@us: %d messages", n)
		}
		if n := len(c.teamHistory(t)); n != 1 {
			return fmt.Errorf("the team's history: %d messages", n)
		}
		// bob's contact of alice@eu is mirrored in eu.
		for k := range node.DumpState(t, c.eu.Node, "r/user/c/bob@us/") {
			if strings.HasSuffix(k, "/alice") {
				return nil
			}
		}
		return errors.New("bob@us's contact of alice not mirrored in eu yet")
	})
	named := map[string]int{}
	for _, k := range erasedKeys(t, c.eu, "bob@us") {
		named[strings.Join(strings.SplitN(k, "/", 4)[:3], "/")]++
	}
	for _, p := range []string{"r/user/c", "r/arch/c", "r/arch/s", "r/arch/v", "r/arch/x"} {
		if named[p] == 0 {
			t.Fatalf("no key under %s/ of eu names bob@us before the deletion: %v", p, named)
		}
	}
	return c
}

func (c crossRegion) historyWithBob(t *testing.T) []envelope {
	t.Helper()
	var hist historyPage
	if st := api(t, c.eu, c.aliceTok, "GET", "/chat/history?with=bob@us", nil, &hist); st != 200 {
		t.Fatalf("alice's history with bob@us: %d", st)
	}
	return hist.Messages
}

func (c crossRegion) teamHistory(t *testing.T) []envelope {
	t.Helper()
	var hist historyPage
	if st := api(t, c.eu, c.aliceTok, "GET", "/chat/history?group="+c.team, nil, &hist); st != 200 {
		t.Fatalf("the team's history: %d", st)
	}
	return hist.Messages
}

func (c crossRegion) deleteBob(t *testing.T) {
	t.Helper()
	if st := api(t, c.us, c.bobTok, "DELETE", "/user/me", map[string]string{"password": nodetest.Password("bob")}, nil); st != 202 {
		t.Fatalf("bob deletes his account: %d", st)
	}
}

// erasedInEU waits until eu holds no key naming bob@us, then checks
// what alice sees of him and that alice and carol keep their own.
func (c crossRegion) erasedInEU(t *testing.T) {
	t.Helper()
	checkFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		if left := erasedKeys(t, c.eu, "bob@us"); len(left) > 0 {
			return fmt.Errorf("eu: %d keys still name bob@us: %v", len(left), left[:min(len(left), 5)])
		}
		return nil
	})
	if h := c.historyWithBob(t); len(h) != 0 {
		t.Fatalf("alice's history with bob@us after: %+v", h)
	}
	var convs conversations
	if st := api(t, c.eu, c.aliceTok, "GET", "/chat/conversations", nil, &convs); st != 200 {
		t.Fatalf("conversations: %d", st)
	}
	carol := false
	for _, cv := range convs.Conversations {
		if cv.Peer == "bob@us" {
			t.Fatalf("alice still lists her conversation with bob@us: %+v", convs)
		}
		carol = carol || cv.Peer == "carol"
	}
	if !carol {
		t.Fatalf("alice lost her conversation with carol: %+v", convs)
	}
	var contacts struct {
		Contacts []profileView `json:"contacts"`
	}
	if st := api(t, c.eu, c.aliceTok, "GET", "/user/me/contacts", nil, &contacts); st != 200 || len(contacts.Contacts) != 0 {
		t.Fatalf("alice's contacts: %d %+v", st, contacts)
	}
	var prof profileView
	if st := api(t, c.eu, c.aliceTok, "GET", "/user/bob@us", nil, &prof); st != 200 || !prof.Deleted || prof.DisplayName != "deleted user" {
		t.Fatalf("GET /user/bob@us in eu: %d %+v", st, prof)
	}
	if st := api(t, c.eu, c.aliceTok, "POST", "/user/me/contacts", map[string]string{"uid": "bob@us"}, nil); st != 404 {
		t.Fatalf("adding the erased bob@us as a contact: %d", st)
	}
	var e apiError
	if st := api(t, c.eu, c.aliceTok, "POST", "/user/groups", map[string]any{"name": "late", "members": []string{"bob@us"}}, &e); st != 400 || e.Error.Code != "unknown_users" {
		t.Fatalf("a group with the erased bob@us: %d %+v, want 400 unknown_users", st, e)
	}
	if code, _ := c.alice.Pub(t, "user/bob@us/newMessage", 1, textMsg("late", "still there?")); code != 0x90 {
		t.Fatalf("a message to the erased bob@us: %#x, want 0x90 no such user", code)
	}
	// bob's group message stays with the group; he is no longer a member.
	if h := c.teamHistory(t); len(h) != 1 || h[0].From != "bob@us" {
		t.Fatalf("the team's history after: %+v", h)
	}
	var g group
	if st := api(t, c.eu, c.aliceTok, "GET", "/user/groups/"+c.team, nil, &g); st != 200 || g.MemberCount != 2 {
		t.Fatalf("the team after: %d %+v", st, g)
	}
	var hist historyPage
	if st := api(t, c.eu, c.carolTok, "GET", "/chat/history?with=alice", nil, &hist); st != 200 || len(hist.Messages) != 1 {
		t.Fatalf("carol's history with alice: %d %+v", st, hist.Messages)
	}
}

// bob@us deletes his account: us erases what it holds of him, and tells
// eu, which erases what it holds of him too (his conversations with its
// users, their contacts of him, his contacts mirrored there) and answers
// him as a deleted user. alice@eu and carol@eu keep their own
// conversation. Before, eu kept everything (the erasure did not cross
// links).
func TestAccountErasureCrossesRegionLinks(t *testing.T) {
	c := startCrossRegion(t)
	c.deleteBob(t)
	checkFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		if left := erasedKeys(t, c.us, "bob"); len(left) > 0 {
			return fmt.Errorf("us: %d keys still name bob: %v", len(left), left[:min(len(left), 5)])
		}
		return nil
	})
	c.erasedInEU(t)
}

// The same with us's link to eu down during bob's erasure: us erases
// him and keeps the erasure for eu in the link's outbox; eu keeps its
// copies while it cannot be told, and erases them once the link is back.
func TestAccountErasureCrossesALinkThatWasDown(t *testing.T) {
	c := startCrossRegion(t)
	c.intoEU.SetCut(true)
	c.deleteBob(t)
	checkFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		if left := erasedKeys(t, c.us, "bob"); len(left) > 0 {
			return fmt.Errorf("us: %d keys still name bob: %v", len(left), left[:min(len(left), 5)])
		}
		if b, err := c.us.Region.Backlog("eu"); err != nil || b == 0 {
			return fmt.Errorf("us's backlog for eu: %d, %v", b, err)
		}
		return nil
	})
	if n := len(c.historyWithBob(t)); n != 6 {
		t.Fatalf("alice's history with bob@us while the link is down: %d messages, want the 6 (not told yet)", n)
	}
	c.intoEU.SetCut(false)
	c.erasedInEU(t)
	checkFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		if b, err := c.us.Region.Backlog("eu"); err != nil || b != 0 {
			return fmt.Errorf("us's backlog for eu: %d, %v", b, err)
		}
		return nil
	})
}

// alice writes to bob@us while eu's link to us is down, and bob's
// erasure reaches eu meanwhile (us's link to eu is up): eu erases her
// message waiting in the outbox for us with the conversation, as it
// would only be refused there. It stayed in the outbox.
func TestAccountErasureTakesWhatWaitsForTheErasedUser(t *testing.T) {
	c := startCrossRegion(t)
	c.intoUS.SetCut(true)
	if code, _ := c.alice.Pub(t, "user/bob@us/newMessage", 1, textMsg("queued", "are you there?")); code != 0 {
		t.Fatalf("alice → bob@us: %#x", code)
	}
	if b, err := c.eu.Region.Backlog("us"); err != nil || b != 1 {
		t.Fatalf("eu's backlog for us: %d, %v; want alice's message", b, err)
	}
	c.deleteBob(t)
	checkFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		if left := erasedKeys(t, c.eu, "bob@us"); len(left) > 0 {
			return fmt.Errorf("eu: %d keys still name bob@us: %v", len(left), left[:min(len(left), 5)])
		}
		// (The team's state, staged once bob@us left it, may wait there.)
		for k, v := range node.DumpState(t, c.eu.Node, "r/rgn/o/us/") {
			if strings.Contains(v, `"to":"bob@us"`) {
				return fmt.Errorf("eu's outbox for us still holds alice's message to the erased bob@us: %q %s", k, v)
			}
		}
		return nil
	})
	c.intoUS.SetCut(false)
	c.erasedInEU(t)
}
