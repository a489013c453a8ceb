package broker

import (
	"context"
	"testing"

	"github.com/eclipse/paho.golang/paho"
)

// A publish that names its topic by alias only is checked against the
// ACL on the resolved topic (mochi checks before resolving aliases).
func TestTopicAliasCannotBypassTheACL(t *testing.T) {
	e := startBroker(t, nil)
	alice := mustV5(t, e.addr, "alice", "d1")
	ctx := context.Background()
	alias := uint16(1)
	// Bind alias 1 to a topic alice may not publish on: refused either way.
	pr, err := alice.Publish(ctx, &paho.Publish{Topic: "presence/alice", QoS: 1, Payload: []byte("{}"),
		Properties: &paho.PublishProperties{TopicAlias: &alias}})
	if pr == nil || pr.ReasonCode != 0x87 {
		t.Fatalf("named forbidden publish: %v %+v", err, pr)
	}
	pr, err = alice.Publish(ctx, &paho.Publish{Topic: "", QoS: 1, Payload: []byte("{}"),
		Properties: &paho.PublishProperties{TopicAlias: &alias}})
	if pr == nil || pr.ReasonCode != 0x87 {
		t.Fatalf("alias-only forbidden publish: %v %+v", err, pr)
	}
	// An alias bound to an allowed topic keeps working: a direct message.
	alias2 := uint16(2)
	payload := []byte(`{"cid":"a1","type":"text","body":"hi"}`)
	if pr, err := alice.Publish(ctx, &paho.Publish{Topic: "user/bob/newMessage", QoS: 1, Payload: payload,
		Properties: &paho.PublishProperties{TopicAlias: &alias2}}); pr == nil || pr.ReasonCode != 0 {
		t.Fatalf("named allowed publish: %v %+v", err, pr)
	}
	payload2 := []byte(`{"cid":"a2","type":"text","body":"hi again"}`)
	if pr, err := alice.Publish(ctx, &paho.Publish{Topic: "", QoS: 1, Payload: payload2,
		Properties: &paho.PublishProperties{TopicAlias: &alias2}}); pr == nil || pr.ReasonCode != 0 {
		t.Fatalf("alias-only allowed publish: %v %+v", err, pr)
	}
	if n := e.chat.callCount(); n != 2 {
		t.Fatalf("chat store called %d times, want 2", n)
	}
}

// A group message retried by alias after its sender left the group is
// answered as the retry it is, as one that names its topic (the archive
// decides); a new one by alias is refused.
func TestTopicAliasGroupRetryAfterLeaving(t *testing.T) {
	e := startBroker(t, nil)
	e.members("g1", "alice", "bob")
	alice := mustV5(t, e.addr, "alice", "d1")
	ctx := context.Background()
	alias := uint16(3)
	sent := []byte(`{"cid":"g1","type":"text","body":"before leaving"}`)
	if pr, err := alice.Publish(ctx, &paho.Publish{Topic: "group/g1/newMessage", QoS: 1, Payload: sent,
		Properties: &paho.PublishProperties{TopicAlias: &alias}}); pr == nil || pr.ReasonCode != 0 {
		t.Fatalf("member's publish: %v %+v", err, pr)
	}
	e.mem.set("g1", "alice", false)
	if pr, err := alice.Publish(ctx, &paho.Publish{Topic: "", QoS: 1, Payload: sent,
		Properties: &paho.PublishProperties{TopicAlias: &alias}}); pr == nil || pr.ReasonCode != 0 {
		t.Fatalf("retry by alias after leaving: %v %+v", err, pr)
	}
	if pr, err := alice.Publish(ctx, &paho.Publish{Topic: "", QoS: 1, Payload: []byte(`{"cid":"g2","type":"text","body":"x"}`),
		Properties: &paho.PublishProperties{TopicAlias: &alias}}); pr == nil || pr.ReasonCode != 0x87 {
		t.Fatalf("new message by alias after leaving: %v %+v", err, pr)
	}
	if n := e.chat.storedCount(); n != 1 {
		t.Fatalf("%d messages stored, want 1", n)
	}
}
