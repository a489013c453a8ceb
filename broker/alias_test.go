package broker

import (
	"bufio"
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgechat/edgechat/internal/testutil/mqtttest"
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

// The server says how many topic aliases a client may use (MQTT 5
// CONNACK Topic Alias Maximum) and refuses a higher one: each alias
// holds a topic name for the connection's life, so an unbounded number
// let one client hold megabytes of the server's memory.
func TestTopicAliasMaximumToldAndKept(t *testing.T) {
	e := startBroker(t, nil)
	_, ca, err := mqtttest.Dial(t, e.addr, mqtttest.Options{ClientID: "alice/d1", Username: "alice", Password: "tok:alice"})
	if err != nil {
		t.Fatal(err)
	}
	if ca.Properties == nil || ca.Properties.TopicAliasMaximum == nil || *ca.Properties.TopicAliasMaximum != TopicAliasMaximum {
		t.Fatalf("CONNACK Topic Alias Maximum: %+v, want %d", ca.Properties, TopicAliasMaximum)
	}

	// A raw client (a library would refuse itself) using the highest
	// alias allowed, then one more.
	conn, r := rawDialV5(t, e.addr, "bob/raw", "bob", "tok:bob")
	publish := func(id uint16, alias uint16, cid string) {
		t.Helper()
		payload := `{"cid":"` + cid + `","type":"text","body":"hi"}`
		if _, err := conn.Write(rawPublishV5("user/alice/newMessage", id, alias, payload)); err != nil {
			t.Fatal(err)
		}
	}
	publish(1, TopicAliasMaximum, "c1")
	if typ, body := readRawPacket(t, r); typ != 0x40 || len(body) < 2 || body[0] != 0 || body[1] != 1 || (len(body) > 2 && body[2] != 0) {
		t.Fatalf("alias %d: got %#x % x, want PUBACK success", TopicAliasMaximum, typ, body)
	}
	publish(2, TopicAliasMaximum+1, "c2")
	typ, body := readRawPacket(t, r)
	if typ != 0xe0 || len(body) < 1 || body[0] != 0x94 {
		t.Fatalf("alias %d: got %#x % x, want DISCONNECT 0x94 (topic alias invalid)", TopicAliasMaximum+1, typ, body)
	}
	if n := e.chat.storedCount(); n != 1 {
		t.Fatalf("%d messages stored, want 1", n)
	}
}

// rawDialV5 connects a raw MQTT 5 client (clientID, user, pass) to addr
// and reads its CONNACK, which must accept it; the connection closes
// with the test, and its reads and writes time out after waitFor.
func rawDialV5(t *testing.T, addr, clientID, user, pass string) (net.Conn, *bufio.Reader) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(waitFor))
	r := bufio.NewReader(conn)
	if _, err := conn.Write(mqtttest.RawConnectV5(clientID, user, pass)); err != nil {
		t.Fatal(err)
	}
	if typ, body := readRawPacket(t, r); typ != 0x20 || len(body) < 2 || body[1] != 0 {
		t.Fatalf("CONNACK of %s: %#x % x", clientID, typ, body)
	}
	return conn, r
}

// rawPublishV5 is a QoS 1 MQTT 5 PUBLISH naming its topic and an alias.
func rawPublishV5(topic string, id, alias uint16, payload string) []byte {
	vh := mqtttest.RawString(nil, topic)
	vh = append(vh, byte(id>>8), byte(id), 3, 0x23, byte(alias>>8), byte(alias))
	return mqtttest.RawPacket(0x32, append(vh, payload...))
}

// readRawPacket reads one MQTT packet: its type byte and its body.
func readRawPacket(t *testing.T, r *bufio.Reader) (byte, []byte) {
	t.Helper()
	typ, body, err := mqtttest.ReadRawPacket(r)
	if err != nil {
		t.Fatal(err)
	}
	return typ, body
}

// A PUBLISH that names a topic with an alias sets that alias for the
// connection [MQTT-3.3.2-12] also when the publish is refused: the client
// has set it on its side. mochi checked the ACL first and left a refused
// publish's alias on its earlier topic, so the client's next publish by
// that alias alone (meant for the refused topic) went to the earlier
// one: here alice's typing in a group she is not a member of reached bob.
func TestARefusedPublishStillSetsItsTopicAlias(t *testing.T) {
	e := startBroker(t, nil)
	bob := mustV5(t, e.addr, "bob", "d1")
	bob.MustSub(t, "user/bob/typing")
	alice := mustV5(t, e.addr, "alice", "d1")
	ctx := context.Background()
	alias := uint16(1)
	pub := func(topic, payload string) byte {
		t.Helper()
		pr, err := alice.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte(payload),
			Properties: &paho.PublishProperties{TopicAlias: &alias}})
		if pr == nil {
			t.Fatalf("publish to %q: %v", topic, err)
		}
		return pr.ReasonCode
	}
	if code := pub("user/bob/typing", `{"state":"typing"}`); code != 0 {
		t.Fatalf("typing to bob: reason %#x", code)
	}
	if m := bob.Next(t); m.Topic != "user/bob/typing" || !strings.Contains(string(m.Payload), `"typing"`) {
		t.Fatalf("bob got %s %s", m.Topic, m.Payload)
	}
	// Alias 1 now names group/g9/typing for alice's client, though the
	// server refuses it (she is not a member).
	if code := pub("group/g9/typing", `{"state":"typing"}`); code != 0x87 {
		t.Fatalf("typing in a group alice is not in: reason %#x, want 0x87", code)
	}
	if code := pub("", `{"state":"stopped"}`); code != 0x87 {
		t.Errorf("typing by alias in that group: reason %#x, want 0x87", code)
	}
	// A marker on bob's topic by name: whatever reached bob before it
	// came from the alias-only publish.
	alias = 2
	if code := pub("user/bob/typing", `{"state":"typing"}`); code != 0 {
		t.Fatalf("marker: reason %#x", code)
	}
	if m := bob.Next(t); !strings.Contains(string(m.Payload), `"typing"`) {
		t.Fatalf("bob got %s %s from a publish alice meant for group/g9/typing, want only the marker", m.Topic, m.Payload)
	}
}
