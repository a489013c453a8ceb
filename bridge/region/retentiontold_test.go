package region_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
)

// A message --link-retention drops (the other region was unreachable
// longer) is undeliverable, and its sender is told as when the other
// region refuses one: the status in history and sync, and an
// undeliverable event (reason "expired") on user/{me}/events. It stayed
// "sent" for good: nothing told the sender it never arrived.
func TestRetentionTellsTheSender(t *testing.T) {
	eu, us := startLinked(t, 1, "eu", "us", nil, nil, nodetest.WithConfig(func(c *node.Config) {
		c.LinkRetention = 3 * time.Second
	}))
	aliceTok := eu.newUser(t, "alice")
	us.newUser(t, "bob")
	alice := connect(t, eu.nodes[0], "alice", "phone", aliceTok)
	alice.MustSub(t, "user/alice/newMessage")
	alice.MustSub(t, "user/alice/events")

	us.in.setCut(true)
	if code, ack := alice.Pub(t, "user/bob@us/newMessage", 1, textMsg("m1", "are you there?")); code != 0 {
		t.Fatalf("PUBACK %#x %q", code, ack.Properties.ReasonString)
	}
	id := decode(t, nextOn(t, alice, "user/alice/newMessage").Payload).ID
	ev := undeliverableEvent(t, alice, "user/alice/events", id)
	if ev["to"] != "bob@us" || ev["reason"] != "expired" {
		t.Fatalf("event %v, want to bob@us, reason expired", ev)
	}
	if m := waitStatus(t, eu.nodes[0], aliceTok, "bob@us", id); m.Status != "undeliverable" || m.Reason != "expired" || m.Body != "are you there?" {
		t.Fatalf("alice's history: %+v", m)
	}
	found := false
	for _, m := range syncStatus(t, eu.nodes[0], aliceTok) {
		if m.ID == id {
			found = m.Status == "undeliverable" && m.Reason == "expired"
		}
	}
	if !found {
		t.Fatalf("alice's sync does not show message %s undeliverable", id)
	}
	// The link goes on: a later message arrives, and is not marked.
	us.in.setCut(false)
	if code, _ := alice.Pub(t, "user/bob@us/newMessage", 1, textMsg("m2", "back?")); code != 0 {
		t.Fatalf("PUBACK %#x", code)
	}
	id2 := decode(t, nextOn(t, alice, "user/alice/newMessage").Payload).ID
	nodetest.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		l := links(t, eu.nodes[0], aliceTok).Links[0]
		if l.State != "up" || l.Backlog != 0 || l.Expired != 1 {
			return fmt.Errorf("after the outage: %+v", l)
		}
		return nil
	})
	for _, m := range historyStatus(t, eu.nodes[0], aliceTok, "bob@us") {
		if m.ID == id2 && m.Status != "" {
			t.Fatalf("the message sent after the outage: %+v", m)
		}
	}
}
