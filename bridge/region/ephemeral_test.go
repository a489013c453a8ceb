package region_test

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

type presenceMsg struct {
	Status string `json:"status"`
}

// nextOn returns c's next message on topic, skipping others.
func nextOn(t *testing.T, c *mqtttest.Client, topic string) *paho.Publish {
	t.Helper()
	for {
		m := c.Next(t)
		if m.Topic == topic {
			return m
		}
	}
}

// presenceOf waits for a presence message on topic with status.
func presenceOf(t *testing.T, c *mqtttest.Client, topic, status string) {
	t.Helper()
	for {
		var p presenceMsg
		m := nextOn(t, c, topic)
		if err := json.Unmarshal(m.Payload, &p); err != nil {
			t.Fatalf("%s: %q: %v", topic, m.Payload, err)
		}
		if p.Status == status {
			return
		}
	}
}

// retry publishes until c gets a message on topic: the other region's
// link subscribes to typing and receipts once it is connected, and
// ephemeral traffic sent before then is dropped, as designed.
func retry(t *testing.T, pub func(), c *mqtttest.Client, topic string) *paho.Publish {
	t.Helper()
	var got *paho.Publish
	nodetest.CheckFor(t, 20*time.Second, 200*time.Millisecond, func() error {
		pub()
		deadline := time.Now().Add(150 * time.Millisecond)
		for time.Now().Before(deadline) {
			if m, ok := c.TryNext(); ok && m.Topic == topic {
				got = m
				return nil
			}
			time.Sleep(5 * time.Millisecond) // polling a client's inbox, not waiting for a state
		}
		return fmt.Errorf("nothing on %s", topic)
	})
	return got
}

// Presence, typing and receipts cross the link between eu and us with
// real MQTT clients: alice@eu sees bob@us's presence (they have a
// conversation), a presence change of carol@us, whom nobody in eu
// watches, does not cross (the link's ephemeral counter counts only
// bob's), typing and a read receipt go both ways with the sender
// qualified, and while the link is down bob's presence shows "unknown"
// and his typing is dropped, not queued.
func TestEphemeralAcrossRegions(t *testing.T) {
	eu, us := startRegions(t, 1, "eu", "us", nil)
	aliceTok, bobTok, carolTok := eu.newUser(t, "alice"), us.newUser(t, "bob"), us.newUser(t, "carol")
	alice := connect(t, eu.nodes[0], "alice", "phone", aliceTok)
	alice.MustSub(t, "user/alice/#")

	// Without a conversation alice may not watch bob.
	if codes := alice.Sub(t, "presence/bob@us"); codes[0] < 0x80 {
		t.Fatalf("presence/bob@us without a conversation: SUBACK %#x", codes[0])
	}
	if code, ack := alice.Pub(t, "user/bob@us/newMessage", 1, textMsg("c1", "hi bob")); code != 0 {
		t.Fatalf("PUBACK %#x %q", code, ack.Properties.ReasonString)
	}
	msgID := ""
	nodetest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		h := history(t, us.nodes[0], bobTok, "alice@eu")
		if len(h) == 0 {
			return fmt.Errorf("not in bob's history yet")
		}
		msgID = h[0].ID
		return nil
	})
	alice.MustSub(t, "presence/bob@us")

	// carol comes online in us; nobody in eu watches her.
	carol := connect(t, us.nodes[0], "carol", "phone", carolTok)
	carol.MustSub(t, "presence/carol")
	presenceOf(t, carol, "presence/carol", "online")

	bob := connect(t, us.nodes[0], "bob", "phone", bobTok)
	bob.MustSub(t, "user/bob/#")
	presenceOf(t, alice, "presence/bob@us", "online")
	httpPresence := func(want string) {
		t.Helper()
		nodetest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
			var p presenceMsg
			if c := call(t, eu.nodes[0], aliceTok, "GET", "/presence/bob@us", nil, &p); c != 200 || p.Status != want {
				return fmt.Errorf("GET /presence/bob@us: %d %+v, want %s", c, p, want)
			}
			return nil
		})
	}
	httpPresence("online")
	// Every presence message eu's link received is one alice got about
	// bob (a retained copy and a live one may both arrive while the link
	// subscribes, hence the wait): carol's never crossed.
	nodetest.CheckFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		n := counter(t, eu.nodes[0], "edgechat_region_link_ephemeral_total", `kind="presence"`)
		got := 0 // "unknown" is eu's own, published while the link was still connecting
		for _, m := range alice.Received("presence/bob@us") {
			var p presenceMsg
			if json.Unmarshal(m.Payload, &p) == nil && p.Status != "unknown" {
				got++
			}
		}
		if n != float64(got) || n == 0 {
			return fmt.Errorf("eu's link received %v presence messages, alice got %d about bob", n, got)
		}
		return nil
	})

	typing := retry(t, func() { alice.Pub(t, "user/bob@us/typing", 0, `{"state":"typing"}`) }, bob, "user/bob/typing")
	if string(typing.Payload) != `{"state":"typing","from":"alice@eu"}` || typing.Properties.User.Get("from") != "alice@eu" {
		t.Fatalf("bob got typing %s %+v", typing.Payload, typing.Properties.User)
	}
	typing = retry(t, func() { bob.Pub(t, "user/alice@eu/typing", 0, `{"state":"stopped"}`) }, alice, "user/alice/typing")
	if string(typing.Payload) != `{"state":"stopped","from":"bob@us"}` {
		t.Fatalf("alice got typing %s", typing.Payload)
	}
	// A read receipt: bob's read cursor of the conversation moves in us
	// (durable, before the PUBACK); alice gets the receipt live.
	if code, ack := bob.Pub(t, "user/alice@eu/receipts", 1, `{"type":"read","upTo":"`+msgID+`"}`); code != 0 {
		t.Fatalf("receipt PUBACK %#x %q", code, ack.Properties.ReasonString)
	}
	r := nextOn(t, alice, "user/alice/receipts")
	var receipt struct{ Type, UpTo, Peer string }
	if err := json.Unmarshal(r.Payload, &receipt); err != nil || receipt.Type != "read" || receipt.UpTo != msgID || receipt.Peer != "bob@us" {
		t.Fatalf("alice got receipt %s", r.Payload)
	}
	if c := call(t, us.nodes[0], bobTok, "POST", "/chat/read", map[string]string{"with": "alice@eu", "upTo": msgID}, nil); c != 204 {
		t.Fatalf("POST /chat/read: %d", c)
	}
	r = nextOn(t, alice, "user/alice/receipts")
	if err := json.Unmarshal(r.Payload, &receipt); err != nil || receipt.Type != "read" || receipt.UpTo != msgID || receipt.Peer != "bob@us" {
		t.Fatalf("alice got receipt %s (over HTTP)", r.Payload)
	}

	// The link from eu to us goes down: bob is unknown to alice, and his
	// typing meanwhile is dropped.
	us.in.setCut(true)
	presenceOf(t, alice, "presence/bob@us", "unknown")
	httpPresence("unknown")
	bob.Pub(t, "user/alice@eu/typing", 0, `{"state":"typing"}`)
	us.in.setCut(false)
	presenceOf(t, alice, "presence/bob@us", "online")
	for _, m := range alice.Received("user/alice/typing") {
		if string(m.Payload) == `{"state":"typing","from":"bob@us"}` {
			t.Fatalf("typing sent while the link was down reached alice: %s", m.Payload)
		}
	}
	httpPresence("online")
	// Nobody in eu watches bob any more: eu's copy says unknown rather
	// than go stale.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := alice.Unsubscribe(ctx, &paho.Unsubscribe{Topics: []string{"presence/bob@us"}}); err != nil {
		t.Fatal(err)
	}
	httpPresence("unknown")
}

// follower is a node of r that does not lead now.
func (r *region) follower(t *testing.T) *nodetest.Node {
	t.Helper()
	l := r.leader(t)
	for _, n := range r.nodes {
		if n != l {
			return n
		}
	}
	t.Fatal("no follower")
	return nil
}

// With three nodes a side, the users on followers (the links run on the
// leaders): alice's subscription on an eu follower is eu's interest,
// bob's presence, published by his presence home in us, reaches eu's
// link; typing crosses both ways; a follower answers a remote profile
// over its own query connection; after eu's leader goes, the next one
// carries typing both ways.
func TestEphemeralThreeNodeRegions(t *testing.T) {
	if testing.Short() {
		t.Skip("six nodes")
	}
	eu, us := startRegions(t, 3, "eu", "us", nil)
	aliceTok, bobTok := eu.newUser(t, "alice"), us.newUser(t, "bob")
	en, un := eu.follower(t), us.follower(t)
	alice := connect(t, en, "alice", "phone", aliceTok)
	alice.MustSub(t, "user/alice/#")
	if code, ack := alice.Pub(t, "user/bob@us/newMessage", 1, textMsg("c1", "hi bob")); code != 0 {
		t.Fatalf("PUBACK %#x %q", code, ack.Properties.ReasonString)
	}
	alice.MustSub(t, "presence/bob@us")
	bob := connect(t, un, "bob", "phone", bobTok)
	bob.MustSub(t, "user/bob/#")
	presenceOf(t, alice, "presence/bob@us", "online")

	typing := retry(t, func() { alice.Pub(t, "user/bob@us/typing", 0, `{"state":"typing"}`) }, bob, "user/bob/typing")
	if string(typing.Payload) != `{"state":"typing","from":"alice@eu"}` {
		t.Fatalf("bob got typing %s", typing.Payload)
	}
	typing = retry(t, func() { bob.Pub(t, "user/alice@eu/typing", 0, `{"state":"typing"}`) }, alice, "user/alice/typing")
	if string(typing.Payload) != `{"state":"typing","from":"bob@us"}` {
		t.Fatalf("alice got typing %s", typing.Payload)
	}
	var p struct {
		UserID string `json:"userId"`
	}
	if c := call(t, en, aliceTok, "GET", "/user/bob@us", nil, &p); c != 200 || p.UserID != "bob@us" {
		t.Fatalf("GET /user/bob@us on a follower: %d %+v", c, p)
	}

	// eu's leader goes: the next one subscribes again, and bob's typing
	// reaches alice through it. (us's link into eu lands on eu.nodes[0]:
	// if that is the leader, it is pointed at alice's node.)
	lead := eu.leader(t)
	if lead == eu.nodes[0] {
		eu.in.setTarget(en.MQTTAddr())
	}
	if err := lead.Stop(); err != nil {
		t.Fatal(err)
	}
	typing = retry(t, func() { bob.Pub(t, "user/alice@eu/typing", 0, `{"state":"stopped"}`) }, alice, "user/alice/typing")
	if string(typing.Payload) != `{"state":"stopped","from":"bob@us"}` {
		t.Fatalf("alice got typing after eu's leader change: %s", typing.Payload)
	}
	typing = retry(t, func() { alice.Pub(t, "user/bob@us/typing", 0, `{"state":"stopped"}`) }, bob, "user/bob/typing")
	if string(typing.Payload) != `{"state":"stopped","from":"alice@eu"}` {
		t.Fatalf("bob got typing after eu's leader change: %s", typing.Payload)
	}
}
