package broker

import (
	"errors"
	"fmt"
	"net"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	pahopk "github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	pahov3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/internal/testutil/mqtttest"
	"github.com/edgechat/edgechat/internal/wire"
)

// members makes uids members of gid in the fake membership.
func (e *testEnv) members(gid string, uids ...string) {
	for _, u := range uids {
		e.mem.set(gid, u, true)
	}
}

func TestGroupACLMatrix(t *testing.T) {
	e := startBroker(t, nil)
	e.members("g1", "alice", "bob")
	e.members("g2", "carol")
	alice := mustV5(t, e.addr, "alice", "phone")
	carol := mustV5(t, e.addr, "carol", "phone")
	for _, tc := range []struct {
		c      *mqtttest.Client
		filter string
		ok     bool
	}{
		{alice, "group/g1/newMessage", true},
		{alice, "group/g1/typing", true},
		{alice, "group/g1/+", true},
		{alice, "group/g1/#", true},
		{alice, "group/g2/newMessage", false},
		{alice, "group/g2/#", false},
		{alice, "group/+/newMessage", false},
		{alice, "group/+/#", false},
		{alice, "group/#", false},
		{alice, "group/g1/+/x", false},
		{alice, "group/g1/members", false},
		{carol, "group/g1/newMessage", false},
		{carol, "group/g1/typing", false},
		{carol, "group/g1/#", false},
		{carol, "group/g2/newMessage", true},
	} {
		code := tc.c.Sub(t, tc.filter)[0]
		if ok := code < 0x80; ok != tc.ok || (!ok && code != 0x87) {
			t.Errorf("subscribe %q: reason 0x%02x, want allowed=%v", tc.filter, code, tc.ok)
		}
	}
	for _, tc := range []struct {
		c     *mqtttest.Client
		topic string
		ok    bool
	}{
		{alice, "group/g1/newMessage", true},
		{alice, "group/g1/typing", true},
		{alice, "group/g2/newMessage", false},
		{alice, "group/g2/typing", false},
		{carol, "group/g1/newMessage", false},
		{carol, "group/g1/typing", false},
	} {
		// A cid of its own: a cid already stored is a retry, which the
		// archive answers with the original wherever it is sent.
		payload := fmt.Sprintf(`{"cid":"acl-%s-%s","type":"text","body":"x"}`, tc.c.ClientID(), tc.topic)
		if strings.HasSuffix(tc.topic, "/typing") {
			payload = `{"state":"typing"}`
		}
		code, _ := tc.c.Pub(t, tc.topic, 1, payload)
		if ok := code < 0x80; ok != tc.ok || (!ok && code != 0x87) {
			t.Errorf("publish %q: reason 0x%02x, want allowed=%v", tc.topic, code, tc.ok)
		}
	}
	// The non-members' messages were refused by the chat store (the
	// archive decides group messages, see TestGroupRetryAfterLeaving).
	if n := e.chat.storedCount(); n != 1 {
		t.Fatalf("%d messages stored, want 1 (alice's only)", n)
	}

	// 3.1.1: a non-member's subscription is 0x80.
	if got := v3SubCode(t, e.addr, "carol", "group/g1/newMessage"); got != 0x80 {
		t.Fatalf("v3 suback %#x, want 0x80", got)
	}

	// Without a Membership, group topics stay closed to everyone.
	e2 := startBrokerWith(t, nil, func(d *Deps) { d.Membership = nil })
	a2 := mustV5(t, e2.addr, "alice", "phone")
	if code := a2.Sub(t, "group/g1/newMessage")[0]; code != 0x87 {
		t.Fatalf("nil Membership: subscribe 0x%02x", code)
	}
	if code, _ := a2.Pub(t, "group/g1/newMessage", 1, `{"cid":"n","type":"text","body":"x"}`); code != 0x87 {
		t.Fatalf("nil Membership: publish 0x%02x", code)
	}
}

// A committed group message reaches every subscribed member device over
// TCP (v5 and 3.1.1) and WebSocket, the sender's own devices included,
// with id and from as user properties; non-members get nothing.
func TestGroupMessageFanOut(t *testing.T) {
	e := startBroker(t, nil)
	e.members("g1", "alice", "bob", "dave", "erin")
	srv := httptest.NewServer(e.b.WebSocketHandler())
	t.Cleanup(srv.Close)

	bob := mustV5(t, e.addr, "bob", "phone")
	bob.MustSub(t, "group/g1/newMessage")
	ws, _, err := dialWS(t, "ws"+strings.TrimPrefix(srv.URL, "http"), nil, "mqtt")
	if err != nil {
		t.Fatal(err)
	}
	dave, _, err := mqtttest.Connect(t, pahopk.NewThreadSafeConn(newWSConn(ws)), mqtttest.Options{ClientID: "dave/browser", Username: "dave", Password: "tok:dave"})
	if err != nil {
		t.Fatalf("connect over ws: %v", err)
	}
	dave.MustSub(t, "group/g1/#")
	phone := mustV5(t, e.addr, "alice", "phone")
	phone.MustSub(t, "group/g1/+")
	erin, _, err := dialV3(t, e.addr, "erin/v3", "erin", "tok:erin")
	if err != nil {
		t.Fatal(err)
	}
	erinMsgs := make(chan pahov3.Message, 10)
	if tok := erin.Subscribe("group/g1/newMessage", 1, func(_ pahov3.Client, m pahov3.Message) { erinMsgs <- m }); !tok.WaitTimeout(waitFor) || tok.Error() != nil {
		t.Fatalf("v3 subscribe: %v", tok.Error())
	}
	carol := mustV5(t, e.addr, "carol", "phone")
	carol.MustSub(t, "user/carol/newMessage")

	code, pr := phone.Pub(t, "group/g1/newMessage", 1, `{"cid":"g-1","type":"text","body":"hi all","group":"evil","from":"mallory"}`)
	if code != 0 {
		t.Fatalf("PUBACK 0x%02x", code)
	}
	ackID := pr.Properties.User.Get("id")
	if ackID == "" || pr.Properties.User.Get("from") != "alice" {
		t.Fatalf("PUBACK properties %+v", pr.Properties)
	}
	for name, c := range map[string]*mqtttest.Client{"bob tcp": bob, "dave ws": dave, "alice's own phone": phone} {
		m := c.Next(t)
		got := envOf(t, m.Payload)
		if m.Topic != "group/g1/newMessage" || got.ID.String() != ackID || got.From != "alice" || got.Group != "g1" || got.To != "" || got.Body != "hi all" {
			t.Fatalf("%s got %s %+v", name, m.Topic, got)
		}
		if m.Properties.User.Get("id") != ackID || m.Properties.User.Get("from") != "alice" {
			t.Fatalf("%s user properties %+v", name, m.Properties.User)
		}
	}
	select {
	case m := <-erinMsgs:
		if got := envOf(t, m.Payload()); got.ID.String() != ackID || got.Group != "g1" {
			t.Fatalf("erin (3.1.1) got %+v", got)
		}
	case <-time.After(waitFor):
		t.Fatal("3.1.1 member got nothing")
	}
	if calls := e.chat.getCalls(); len(calls) != 1 || calls[0].from != "alice" || calls[0].to != "group:g1" || calls[0].env.CID != "g-1" {
		t.Fatalf("ChatStore calls %+v", calls)
	}

	// A retry of the same cid is acknowledged and not delivered again.
	if code, _ := phone.Pub(t, "group/g1/newMessage", 1, `{"cid":"g-1","type":"text","body":"hi all"}`); code != 0 {
		t.Fatalf("retry PUBACK 0x%02x", code)
	}
	// A 3.1.1 member publishes too.
	if tok := erin.Publish("group/g1/newMessage", 1, false, `{"cid":"e-1","type":"text","body":"from v3"}`); !tok.WaitTimeout(waitFor) || tok.Error() != nil {
		t.Fatalf("v3 group publish: %v", tok.Error())
	}
	if got := envOf(t, bob.Next(t).Payload); got.CID != "e-1" || got.From != "erin" {
		t.Fatalf("bob got %+v after the retry (duplicate delivered?)", got)
	}

	// carol, no member, got nothing: her first message is a later DM.
	if code, _ := bob.Pub(t, "user/carol/newMessage", 1, `{"cid":"dm","type":"text","body":"barrier"}`); code != 0 {
		t.Fatalf("DM PUBACK 0x%02x", code)
	}
	if got := envOf(t, carol.Next(t).Payload); got.CID != "dm" {
		t.Fatalf("non-member got %+v", got)
	}
	testutil.CheckFor(t, waitFor, 10*time.Millisecond, func() error {
		if v := testutil.CounterValue(t, e.b.m.out.WithLabelValues("group")); v != 8 { // 4 devices × 2 messages
			return fmt.Errorf("messages_out{group} = %v", v)
		}
		return nil
	})
}

func TestGroupStoreErrorsMapToReasonCodes(t *testing.T) {
	e := startBroker(t, nil)
	e.members("g1", "alice", "bob")
	bob := mustV5(t, e.addr, "bob", "phone")
	bob.MustSub(t, "group/g1/newMessage")
	alice := mustV5(t, e.addr, "alice", "phone")
	for _, tc := range []struct {
		err    error
		code   byte
		reason string
	}{
		{fmt.Errorf("removed meanwhile: %w", wire.ErrForbidden), 0x87, ""},
		{fmt.Errorf("x: %w", wire.ErrNotFound), 0x90, "topic name invalid: no such group"},
		{fmt.Errorf("raft: %w", wire.ErrUnavailable), 0x83, reasonNotCommitted},
	} {
		e.chat.setErr(tc.err)
		code, pr := alice.Pub(t, "group/g1/newMessage", 1, `{"cid":"c","type":"text","body":"lost"}`)
		if code != tc.code || (tc.reason != "" && pr.Properties.ReasonString != tc.reason) {
			t.Fatalf("%v: PUBACK 0x%02x %q, want 0x%02x %q", tc.err, code, pr.Properties.ReasonString, tc.code, tc.reason)
		}
	}
	if code, _ := alice.Pub(t, "group/g1/newMessage", 1, `{"cid":"bad","type":"nope"}`); code != 0x99 {
		t.Fatalf("invalid envelope: 0x%02x", code)
	}
	e.chat.setErr(nil)
	alice.Pub(t, "group/g1/newMessage", 1, `{"cid":"after","type":"text","body":"ok"}`)
	if got := envOf(t, bob.Next(t).Payload); got.CID != "after" {
		t.Fatalf("uncommitted group message delivered: %+v", got)
	}
}

func TestGroupTypingMembersOnly(t *testing.T) {
	e := startBroker(t, nil)
	e.members("g1", "alice", "bob")
	bob := mustV5(t, e.addr, "bob", "phone")
	bob.MustSub(t, "group/g1/typing")
	alice := mustV5(t, e.addr, "alice", "phone")
	carol := mustV5(t, e.addr, "carol", "phone")
	if code, _ := carol.Pub(t, "group/g1/typing", 1, `{"state":"typing"}`); code != 0x87 {
		t.Fatalf("non-member typing: 0x%02x", code)
	}
	if code, _ := alice.Pub(t, "group/g1/typing", 1, `{"state":"stopped","from":"mallory"}`); code != 0 {
		t.Fatalf("PUBACK 0x%02x", code)
	}
	m := bob.Next(t)
	if m.Topic != "group/g1/typing" || string(m.Payload) != `{"state":"stopped","from":"alice"}` || m.Properties.User.Get("from") != "alice" {
		t.Fatalf("got %s %q", m.Topic, m.Payload)
	}
	if code, _ := alice.Pub(t, "group/g1/typing", 1, `{"state":"dancing"}`); code != 0x99 {
		t.Fatalf("invalid typing: 0x%02x", code)
	}
	if e.chat.callCount() != 0 {
		t.Fatal("typing stored")
	}
}

// A removed member stops receiving once the removal commits (the users
// service then calls DropGroupSubscriptions on every node), cannot
// publish, and the dropped subscriptions are not revived silently when
// the member is added back later.
func TestGroupMemberRemovedLive(t *testing.T) {
	e := startBroker(t, nil)
	e.members("g1", "alice", "bob", "carol")
	var bobs []*mqtttest.Client
	for _, dev := range []string{"phone", "laptop"} {
		c := mustV5(t, e.addr, "bob", dev)
		c.MustSub(t, "user/bob/newMessage")
		bobs = append(bobs, c)
	}
	bobs[0].MustSub(t, "group/g1/newMessage")
	bobs[1].MustSub(t, "group/g1/#")
	carol := mustV5(t, e.addr, "carol", "phone")
	carol.MustSub(t, "group/g1/newMessage")
	alice := mustV5(t, e.addr, "alice", "phone")

	send := func(cid string) {
		t.Helper()
		if code, _ := alice.Pub(t, "group/g1/newMessage", 1, `{"cid":"`+cid+`","type":"text","body":"x"}`); code != 0 {
			t.Fatalf("%s: PUBACK 0x%02x", cid, code)
		}
		if got := envOf(t, carol.Next(t).Payload); got.CID != cid {
			t.Fatalf("carol got %+v, want %s", got, cid)
		}
	}
	// bobNothing: bob's first message is a DM sent after the group ones.
	bobNothing := func(dm string) {
		t.Helper()
		if code, _ := alice.Pub(t, "user/bob/newMessage", 1, `{"cid":"`+dm+`","type":"text","body":"barrier"}`); code != 0 {
			t.Fatalf("DM PUBACK 0x%02x", code)
		}
		for i, c := range bobs {
			if m := c.Next(t); m.Topic != "user/bob/newMessage" || envOf(t, m.Payload).CID != dm {
				t.Fatalf("bob device %d got %s %q", i, m.Topic, m.Payload)
			}
		}
	}

	send("before")
	for _, c := range bobs {
		if got := envOf(t, c.Next(t).Payload); got.CID != "before" {
			t.Fatalf("member bob got %+v", got)
		}
	}

	e.mem.set("g1", "bob", false) // the removal commits...
	if code, _ := bobs[0].Pub(t, "group/g1/newMessage", 1, `{"cid":"b","type":"text","body":"still here?"}`); code != 0x87 {
		t.Fatalf("removed member's publish: 0x%02x", code)
	}
	e.b.DropGroupSubscriptions("g1", "bob") // ...and its callback runs
	send("after-removal")
	bobNothing("dm1")
	for _, id := range []string{"bob/phone", "bob/laptop"} {
		cl, ok := e.b.Server().Clients.Get(id)
		if !ok {
			t.Fatalf("%s gone", id)
		}
		for f := range cl.State.Subscriptions.GetAll() {
			if strings.HasPrefix(f, "group/") {
				t.Fatalf("%s still subscribed to %s", id, f)
			}
		}
		if _, ok := cl.State.Subscriptions.Get("user/bob/newMessage"); !ok {
			t.Fatalf("%s lost its other subscription", id)
		}
	}
	if subs := e.b.Server().Topics.Subscribers("group/g1/newMessage").Subscriptions; len(subs) != 1 || subs["carol/phone"].Filter == "" {
		t.Fatalf("subscribers after drop: %+v", subs)
	}

	e.mem.set("g1", "bob", true) // added back: the old subscriptions stay gone
	send("readded")
	bobNothing("dm2")
	e.b.DropGroupSubscriptions("g1", "nobody") // harmless
	e.b.DropGroupSubscriptions("bad/gid", "bob")
}

// A persistent session resumed after its user left a group loses the
// group subscriptions it had.
func TestGroupSubscriptionsDroppedOnResume(t *testing.T) {
	e := startBroker(t, nil)
	e.members("g1", "alice", "bob")
	conn, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	bob, _, err := mqtttest.Connect(t, conn, mqtttest.Options{ClientID: "bob/phone", Username: "bob", Password: "tok:bob", SessionExpiry: 3600})
	if err != nil {
		t.Fatal(err)
	}
	bob.MustSub(t, "group/g1/newMessage")
	bob.MustSub(t, "user/bob/newMessage")
	if err := bob.Disconnect(&paho.Disconnect{}); err != nil {
		t.Fatal(err)
	}
	testutil.CheckFor(t, waitFor, 5*time.Millisecond, func() error {
		if e.b.Connections() != 0 {
			return errors.New("still connected")
		}
		return nil
	})
	e.mem.set("g1", "bob", false)
	conn2, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, ca, err := mqtttest.Connect(t, conn2, mqtttest.Options{ClientID: "bob/phone", Username: "bob", Password: "tok:bob", SessionExpiry: 3600, KeepSession: true}); err != nil || !ca.SessionPresent {
		t.Fatalf("resume: %v %+v", err, ca)
	}
	testutil.CheckFor(t, waitFor, 5*time.Millisecond, func() error {
		cl, ok := e.b.Server().Clients.Get("bob/phone")
		if !ok {
			return errors.New("no session")
		}
		if _, ok := cl.State.Subscriptions.Get("group/g1/newMessage"); ok {
			return errors.New("group subscription kept")
		}
		if _, ok := cl.State.Subscriptions.Get("user/bob/newMessage"); !ok {
			return errors.New("own subscription lost")
		}
		// Counted just after the subscription goes: wait for it too.
		if v := testutil.CounterValue(t, e.b.m.refused.WithLabelValues("subscription_revoked")); v != 1 {
			return fmt.Errorf("refused{subscription_revoked} = %v", v)
		}
		return nil
	})
}

// A SUBSCRIBE whose ACL check passed just before the member was removed
// (DropGroupSubscriptions then found nothing to drop) loses the
// subscription once it is in place: deliveries to live sessions do not
// look membership up again, so the subscription must not outlive the
// membership.
func TestGroupSubscribeRacingRemoval(t *testing.T) {
	e := startBroker(t, nil)
	e.members("g1", "alice", "bob", "carol")
	bob := mustV5(t, e.addr, "bob", "phone")
	bob.MustSub(t, "user/bob/newMessage")
	carol := mustV5(t, e.addr, "carol", "phone")
	carol.MustSub(t, "group/g1/newMessage")
	alice := mustV5(t, e.addr, "alice", "phone")

	e.mem.removeAfterCheck("g1", "bob")
	// Granted, then bob is removed: the removal's DropGroupSubscriptions
	// ran before the subscription was in place and found nothing.
	bob.MustSub(t, "group/g1/#")

	groupMessageSkipsRemovedBob(t, alice, carol, bob)
	cl, _ := e.b.Server().Clients.Get("bob/phone")
	if _, ok := cl.State.Subscriptions.Get("group/g1/#"); ok {
		t.Fatal("bob still subscribed to group/g1/#")
	}
}

// A snapshot restore can remove members without the per-removal
// callback; RecheckSubscriptions (run by the node after a restore) drops
// what the live sessions may no longer hold.
func TestRecheckSubscriptionsAfterRestore(t *testing.T) {
	e := startBroker(t, nil)
	e.members("g1", "alice", "bob", "carol")
	bob := mustV5(t, e.addr, "bob", "phone")
	bob.MustSub(t, "user/bob/newMessage")
	bob.MustSub(t, "group/g1/newMessage")
	carol := mustV5(t, e.addr, "carol", "phone")
	carol.MustSub(t, "group/g1/newMessage")
	alice := mustV5(t, e.addr, "alice", "phone")

	e.mem.set("g1", "bob", false) // the restored state has no bob
	e.b.RecheckSubscriptions()
	groupMessageSkipsRemovedBob(t, alice, carol, bob)
	cl, _ := e.b.Server().Clients.Get("bob/phone")
	if _, ok := cl.State.Subscriptions.Get("user/bob/newMessage"); !ok {
		t.Fatal("bob lost his own subscription")
	}
}

// groupMessageSkipsRemovedBob has alice send a message to g1, which carol
// (a member) receives, then a DM to bob as a barrier: bob, no longer a
// member, must get the DM and nothing of the group before it.
func groupMessageSkipsRemovedBob(t *testing.T, alice, carol, bob *mqtttest.Client) {
	t.Helper()
	if code, _ := alice.Pub(t, "group/g1/newMessage", 1, `{"cid":"g","type":"text","body":"x"}`); code != 0 {
		t.Fatalf("PUBACK 0x%02x", code)
	}
	if got := envOf(t, carol.Next(t).Payload); got.CID != "g" {
		t.Fatalf("carol got %+v", got)
	}
	if code, _ := alice.Pub(t, "user/bob/newMessage", 1, `{"cid":"dm","type":"text","body":"barrier"}`); code != 0 {
		t.Fatalf("DM PUBACK 0x%02x", code)
	}
	if m := bob.Next(t); m.Topic != "user/bob/newMessage" {
		t.Fatalf("removed member got %s %q", m.Topic, m.Payload)
	}
}
