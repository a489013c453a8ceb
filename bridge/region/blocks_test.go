package region_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/testutil/mqtttest"
	"github.com/edgechat/edgechat/node/nodetest"
)

// statusEnvelope is a stored message with the fields of an undeliverable one.
type statusEnvelope struct {
	ID     string `json:"id"`
	From   string `json:"from"`
	To     string `json:"to"`
	Body   string `json:"body"`
	Status string `json:"status"`
	Reason string `json:"reason"`
}

// historyStatus is the whole history of user (token) with peer on n.
func historyStatus(t *testing.T, n *nodetest.Node, token, peer string) []statusEnvelope {
	t.Helper()
	var out struct {
		Messages []statusEnvelope `json:"messages"`
	}
	if c := call(t, n, token, "GET", "/chat/history?limit=200&with="+peer, nil, &out); c != http.StatusOK {
		t.Fatalf("history with %s: %d", peer, c)
	}
	return out.Messages
}

// syncStatus is the first page of user's sync on n.
func syncStatus(t *testing.T, n *nodetest.Node, token string) []statusEnvelope {
	t.Helper()
	var out struct {
		Messages []statusEnvelope `json:"messages"`
	}
	if c := call(t, n, token, "GET", "/chat/sync?limit=1000", nil, &out); c != http.StatusOK {
		t.Fatalf("sync: %d", c)
	}
	return out.Messages
}

// seesPresence waits until viewer (token, on n) may or may not see
// subject's presence: GET /presence/{subject} 200 or 403.
func seesPresence(t *testing.T, n *nodetest.Node, token, subject string, want bool) {
	t.Helper()
	nodetest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		code := call(t, n, token, "GET", "/presence/"+subject, nil, nil)
		if (code == http.StatusOK) != want || code != http.StatusOK && code != http.StatusForbidden {
			return fmt.Errorf("GET /presence/%s: %d, want visible %v", subject, code, want)
		}
		return nil
	})
}

// undeliverableEvent waits for the undeliverable event of message id on c.
func undeliverableEvent(t *testing.T, c *mqtttest.Client, topic, id string) map[string]string {
	t.Helper()
	for {
		m := nextOn(t, c, topic)
		var ev map[string]string
		if json.Unmarshal(m.Payload, &ev) == nil && ev["type"] == "undeliverable" && ev["id"] == id {
			return ev
		}
	}
}

// waitStatus waits until message id in user's history with peer has
// status undeliverable, and returns it.
func waitStatus(t *testing.T, n *nodetest.Node, token, peer, id string) statusEnvelope {
	t.Helper()
	var got statusEnvelope
	nodetest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		for _, m := range historyStatus(t, n, token, peer) {
			if m.ID == id && m.Status != "" {
				got = m
				return nil
			}
		}
		return fmt.Errorf("message %s has no status yet in the history with %s", id, peer)
	})
	return got
}

// noAdmins creates the first account of each region (an admin, who sees
// every presence), so that the test's users are not.
func noAdmins(t *testing.T, regions ...*region) {
	t.Helper()
	for _, r := range regions {
		r.newUser(t, "root")
	}
}

// alice@eu adds bob@us to her contacts: bob may see her presence in us
// (the visibility rule is applied in the viewer's region, from the
// contact the link carried). She blocks him: in us her presence is
// hidden from him and his typing and receipts to her refused; his message, committed
// in us, is refused by eu for good and comes back undeliverable
// ("forbidden", what a local sender is told) in his history, his sync
// and as an event, and alice never gets it. She unblocks him: presence
// visible again, his messages and typing reach her.
func TestBlocksAndContactsAcrossRegions(t *testing.T) {
	eu, us := startRegions(t, 1, "eu", "us", nil)
	noAdmins(t, eu, us)
	aliceTok, bobTok := eu.newUser(t, "alice"), us.newUser(t, "bob")
	alice := connect(t, eu.nodes[0], "alice", "phone", aliceTok)
	alice.MustSub(t, "user/alice/#", "presence/alice")
	bob := connect(t, us.nodes[0], "bob", "phone", bobTok)
	bob.MustSub(t, "user/bob/#")

	// Unknown regions and users: refused, nothing changes.
	if c := call(t, eu.nodes[0], aliceTok, "POST", "/user/me/contacts", map[string]string{"uid": "bob@mars"}, nil); c != http.StatusNotFound {
		t.Fatalf("contact of an unknown region: %d, want 404", c)
	}
	if c := call(t, eu.nodes[0], aliceTok, "POST", "/user/me/blocks", map[string]string{"uid": "bob@"}, nil); c != http.StatusNotFound {
		t.Fatalf("block of a malformed address: %d, want 404", c)
	}
	if c := call(t, eu.nodes[0], aliceTok, "POST", "/user/me/contacts", map[string]string{"uid": "nobody@us"}, nil); c != http.StatusNotFound {
		t.Fatalf("contact of a user us does not have: %d, want 404", c)
	}

	seesPresence(t, us.nodes[0], bobTok, "alice@eu", false) // no contact, no conversation
	var prof struct{ UserID string }
	if c := call(t, eu.nodes[0], aliceTok, "POST", "/user/me/contacts", map[string]string{"uid": "bob@us"}, &prof); c != http.StatusCreated || prof.UserID != "bob@us" {
		t.Fatalf("POST /user/me/contacts bob@us: %d %+v", c, prof)
	}
	var contacts struct{ Contacts []struct{ UserID string } }
	if c := call(t, eu.nodes[0], aliceTok, "GET", "/user/me/contacts", nil, &contacts); c != 200 || len(contacts.Contacts) != 1 || contacts.Contacts[0].UserID != "bob@us" {
		t.Fatalf("contacts: %d %+v", c, contacts)
	}
	seesPresence(t, us.nodes[0], bobTok, "alice@eu", true)
	// Over MQTT too: bob subscribes to alice's presence in us, and the
	// retained copy us's link keeps arrives.
	bob.MustSub(t, "presence/alice@eu")
	presenceOf(t, bob, "presence/alice@eu", "online")

	// alice blocks bob.
	if c := call(t, eu.nodes[0], aliceTok, "POST", "/user/me/blocks", map[string]string{"uid": "bob@us"}, &prof); c != http.StatusCreated || prof.UserID != "bob@us" {
		t.Fatalf("POST /user/me/blocks bob@us: %d %+v", c, prof)
	}
	seesPresence(t, us.nodes[0], bobTok, "alice@eu", false)
	if codes := bob.Sub(t, "presence/alice@eu"); codes[0] < 0x80 {
		t.Fatalf("presence/alice@eu while blocked: SUBACK %#x", codes[0])
	}
	if code, _ := bob.Pub(t, "user/alice@eu/typing", 1, `{"state":"typing"}`); code != 0x87 {
		t.Fatalf("typing to alice@eu while blocked: PUBACK %#x, want 0x87", code)
	}
	// His message commits in us (the PUBACK), and eu refuses it for good.
	if code, ack := bob.Pub(t, "user/alice@eu/newMessage", 1, textMsg("b1", "let me in")); code != 0 {
		t.Fatalf("PUBACK %#x %q", code, ack.Properties.ReasonString)
	}
	copyOf := nextOn(t, bob, "user/bob/newMessage")
	id := decode(t, copyOf.Payload).ID
	ev := undeliverableEvent(t, bob, "user/bob/events", id)
	if ev["to"] != "alice@eu" || ev["reason"] != "forbidden" {
		t.Fatalf("event %v", ev)
	}
	if m := waitStatus(t, us.nodes[0], bobTok, "alice@eu", id); m.Status != "undeliverable" || m.Reason != "forbidden" || m.Body != "let me in" {
		t.Fatalf("bob's history: %+v", m)
	}
	found := false
	for _, m := range syncStatus(t, us.nodes[0], bobTok) {
		if m.ID == id {
			found = m.Status == "undeliverable" && m.Reason == "forbidden"
		}
	}
	if !found {
		t.Fatalf("bob's sync does not show message %s undeliverable", id)
	}
	if code, _ := bob.Pub(t, "user/alice@eu/receipts", 1, `{"type":"delivered","upTo":"`+id+`"}`); code != 0x87 {
		t.Fatalf("delivered receipt to alice@eu while blocked: PUBACK %#x, want 0x87", code)
	}
	// A read receipt moves bob's own cursor (acknowledged) and reaches
	// nobody (protocol.md, Receipts and typing).
	if code, _ := bob.Pub(t, "user/alice@eu/receipts", 1, `{"type":"read","upTo":"`+id+`"}`); code != 0 {
		t.Fatalf("read receipt to alice@eu while blocked: PUBACK %#x, want 0", code)
	}
	if h := historyStatus(t, eu.nodes[0], aliceTok, "bob@us"); len(h) != 0 {
		t.Fatalf("alice's history with bob@us while she blocks him: %+v", h)
	}
	for _, m := range alice.Received("user/alice/newMessage") {
		t.Fatalf("alice got a message of someone she blocked: %s", m.Payload)
	}
	for _, m := range alice.Received("user/alice/receipts") {
		t.Fatalf("alice got a receipt of someone she blocked: %s", m.Payload)
	}

	// alice unblocks bob: visible again, his messages and typing reach her.
	if c := call(t, eu.nodes[0], aliceTok, "DELETE", "/user/me/blocks/bob@us", nil, nil); c != http.StatusNoContent {
		t.Fatalf("DELETE /user/me/blocks/bob@us: %d", c)
	}
	seesPresence(t, us.nodes[0], bobTok, "alice@eu", true)
	bob.MustSub(t, "presence/alice@eu")
	if code, ack := bob.Pub(t, "user/alice@eu/newMessage", 1, textMsg("b2", "thanks")); code != 0 {
		t.Fatalf("PUBACK %#x %q", code, ack.Properties.ReasonString)
	}
	if got := decode(t, nextOn(t, alice, "user/alice/newMessage").Payload); got.From != "bob@us" || got.Body != "thanks" {
		t.Fatalf("alice got %+v", got)
	}
	typing := retry(t, func() { bob.Pub(t, "user/alice@eu/typing", 0, `{"state":"typing"}`) }, alice, "user/alice/typing")
	if !strings.Contains(string(typing.Payload), `"from":"bob@us"`) {
		t.Fatalf("typing %s", typing.Payload)
	}
	// The count moves once the link's apply returns, which may be just
	// after the state it applied is visible.
	nodetest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if n := counter(t, us.nodes[0], "edgechat_region_link_notices_total", `kind="relation",link="eu",result="applied"`); n != 3 {
			return fmt.Errorf("us applied %v relations of eu, want 3 (contact, block, unblock)", n)
		}
		return nil
	})
}

// A block made while the link is down reaches the other region when it
// is back: bob sees alice's presence (a contact), the link from eu to us
// goes down, alice blocks him and carol@us, whom nobody looked up
// (accepted: the profile lookup cannot tell and a block does not wait
// for a link), and once the link is back bob may not see her any more;
// us, which has no carol, skips her block.
func TestBlockDuringOutageArrives(t *testing.T) {
	eu, us := startRegions(t, 1, "eu", "us", nil)
	noAdmins(t, eu, us)
	aliceTok, bobTok := eu.newUser(t, "alice"), us.newUser(t, "bob")
	if c := call(t, eu.nodes[0], aliceTok, "POST", "/user/me/contacts", map[string]string{"uid": "bob@us"}, nil); c != http.StatusCreated {
		t.Fatalf("contact: %d", c)
	}
	seesPresence(t, us.nodes[0], bobTok, "alice@eu", true)

	us.in.setCut(true)
	var prof struct{ UserID, DisplayName string }
	if c := call(t, eu.nodes[0], aliceTok, "POST", "/user/me/blocks", map[string]string{"uid": "bob@us"}, &prof); c != http.StatusCreated || prof.UserID != "bob@us" {
		t.Fatalf("block while the link is down: %d %+v", c, prof)
	}
	// carol@us, never looked up: nothing cached, the lookup fails, the
	// block is kept unchecked (a bare profile in the answer).
	start := time.Now()
	if c := call(t, eu.nodes[0], aliceTok, "POST", "/user/me/blocks", map[string]string{"uid": "carol@us"}, &prof); c != http.StatusCreated || prof != (struct{ UserID, DisplayName string }{"carol@us", "carol@us"}) {
		t.Fatalf("block of a user never looked up while the link is down: %d %+v", c, prof)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("block while the link is down took %v", d)
	}
	nodetest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if n, err := eu.nodes[0].Region.Backlog("us"); err != nil || n == 0 {
			return fmt.Errorf("eu's backlog for us: %d %v", n, err)
		}
		return nil
	})
	if c := call(t, us.nodes[0], bobTok, "GET", "/presence/alice@eu", nil, nil); c != http.StatusOK {
		t.Fatalf("bob sees alice before the block crossed: %d, want 200", c)
	}
	us.in.setCut(false)
	nodetest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if n, err := eu.nodes[0].Region.Backlog("us"); err != nil || n != 0 {
			return fmt.Errorf("eu's backlog for us: %d %v", n, err)
		}
		return nil
	})
	seesPresence(t, us.nodes[0], bobTok, "alice@eu", false)
	// carol does not exist in us: the relation is refused there, counted.
	nodetest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if n := counter(t, us.nodes[0], "edgechat_region_link_notices_total", `kind="relation",link="eu",result="refused"`); n != 1 {
			return fmt.Errorf("us refused %v relations, want 1 (carol's)", n)
		}
		return nil
	})
}

// A message to a user the other region does not have comes back
// undeliverable: alice's PUBACK says committed in eu, us refuses it for
// good and sends a notice back through its own outbox; eu commits it:
// alice's history and sync show the status and her devices get the
// event, once. A notice is never answered by a notice, and a forged
// message's notice goes back to the link that sent it only.
func TestUndeliverableAcrossRegions(t *testing.T) {
	eu, us := startRegions(t, 1, "eu", "us", nil)
	aliceTok := eu.newUser(t, "alice")
	us.newUser(t, "bob")
	alice := connect(t, eu.nodes[0], "alice", "phone", aliceTok)
	alice.MustSub(t, "user/alice/#")

	if code, ack := alice.Pub(t, "user/nobody@us/newMessage", 1, textMsg("n1", "anyone?")); code != 0 {
		t.Fatalf("PUBACK %#x %q", code, ack.Properties.ReasonString)
	}
	id := decode(t, nextOn(t, alice, "user/alice/newMessage").Payload).ID
	ev := undeliverableEvent(t, alice, "user/alice/events", id)
	if ev["to"] != "nobody@us" || ev["reason"] != "no_such_user" {
		t.Fatalf("event %v", ev)
	}
	if m := waitStatus(t, eu.nodes[0], aliceTok, "nobody@us", id); m.Status != "undeliverable" || m.Reason != "no_such_user" || m.Body != "anyone?" {
		t.Fatalf("history: %+v", m)
	}
	found := false
	for _, m := range syncStatus(t, eu.nodes[0], aliceTok) {
		found = found || m.ID == id && m.Status == "undeliverable" && m.Reason == "no_such_user"
	}
	if !found {
		t.Fatal("sync does not show the message undeliverable")
	}

	// A link that is eu's publishes into us: a notice naming a message
	// us never sent is refused and not answered (us stages nothing for
	// eu); a message claiming a sender of a third region is refused as
	// forged, and its notice goes to eu, whose link brought it (where it
	// names no message of eu's and is refused in turn, unanswered).
	link := mqttLinkAsEU(t, us)
	staged := func(n *nodetest.Node, link string) float64 {
		return counter(t, n, "edgechat_region_link_notices_total", `kind="undeliverable",link="`+link+`",result="staged"`)
	}
	before := staged(us.nodes[0], "eu")
	fake := `[{"k":"undeliverable","p":{"id":"77","from":"bob@us","to":"alice@eu","reason":"no_such_user"}}]`
	if code, ack := link.Pub(t, "$link/eu/batch", 1, fake); code != 0 {
		t.Fatalf("batch PUBACK %#x %q", code, ack.Properties.ReasonString)
	}
	if n := counter(t, us.nodes[0], "edgechat_region_link_notices_total", `kind="undeliverable",link="eu",result="refused"`); n != 1 {
		t.Fatalf("us refused %v notices, want 1", n)
	}
	if n := staged(us.nodes[0], "eu"); n != before {
		t.Fatalf("us answered a notice with a notice: staged %v, was %v", n, before)
	}
	forged := `[{"k":"dm","p":{"id":"78","from":"carol@mars","to":"bob@us","cid":"f1","type":"text","body":"x"}}]`
	if code, ack := link.Pub(t, "$link/eu/batch", 1, forged); code != 0 {
		t.Fatalf("batch PUBACK %#x %q", code, ack.Properties.ReasonString)
	}
	if n := staged(us.nodes[0], "eu"); n != before+1 {
		t.Fatalf("us staged %v notices for eu, want %v", n, before+1)
	}
	nodetest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		if n := counter(t, eu.nodes[0], "edgechat_region_link_notices_total", `kind="undeliverable",link="us",result="refused"`); n != 1 {
			return fmt.Errorf("eu refused %v notices, want 1 (the forged message's)", n)
		}
		return nil
	})
	if n := staged(eu.nodes[0], "us"); n != 0 {
		t.Fatalf("eu answered a notice with a notice: staged %v", n)
	}
	// alice got one event for her message, not one per notice.
	n := 0
	for _, m := range alice.Received("user/alice/events") {
		if strings.Contains(string(m.Payload), `"undeliverable"`) {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("alice got %d undeliverable events, want 1", n)
	}
}

// With three nodes a side and the users on followers (the links run on
// the leaders): alice's block of bob@us, made on an eu follower, is
// staged on every node and reaches every node of us (bob asks two of
// them); his message comes back undeliverable, with the status on every
// node of us and the event on his device.
func TestBlocksAndUndeliverableThreeNodeRegions(t *testing.T) {
	eu, us := startRegions(t, 3, "eu", "us", nil)
	noAdmins(t, eu, us)
	aliceTok, bobTok := eu.newUser(t, "alice"), us.newUser(t, "bob")
	euF, usF := eu.follower(t), us.follower(t)
	bob := connect(t, usF, "bob", "phone", bobTok)
	bob.MustSub(t, "user/bob/#")
	if c := call(t, euF, aliceTok, "POST", "/user/me/contacts", map[string]string{"uid": "bob@us"}, nil); c != http.StatusCreated {
		t.Fatalf("contact: %d", c)
	}
	for _, n := range us.nodes {
		seesPresence(t, n, bobTok, "alice@eu", true)
	}
	if c := call(t, euF, aliceTok, "POST", "/user/me/blocks", map[string]string{"uid": "bob@us"}, nil); c != http.StatusCreated {
		t.Fatalf("block: %d", c)
	}
	for _, n := range us.nodes {
		seesPresence(t, n, bobTok, "alice@eu", false)
	}
	if code, ack := bob.Pub(t, "user/alice@eu/newMessage", 1, textMsg("b1", "hello?")); code != 0 {
		t.Fatalf("PUBACK %#x %q", code, ack.Properties.ReasonString)
	}
	id := decode(t, nextOn(t, bob, "user/bob/newMessage").Payload).ID
	if ev := undeliverableEvent(t, bob, "user/bob/events", id); ev["reason"] != "forbidden" {
		t.Fatalf("event %v", ev)
	}
	for _, n := range us.nodes {
		if m := waitStatus(t, n, bobTok, "alice@eu", id); m.Reason != "forbidden" {
			t.Fatalf("history on %s: %+v", n.Config.NodeID, m)
		}
	}
}
