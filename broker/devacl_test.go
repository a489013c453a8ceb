package broker

import (
	"github.com/edgechat/edgechat/internal/testutil/mqtttest"
	"slices"
	"testing"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgechat/edgechat/internal/wire"
)

// The delivery check runs for every delivery: in dev mode an open topic
// is decided without allocating, and the answers are those of allowed.
func TestDevDeliveryCheckIsCheap(t *testing.T) {
	dev := &hook{b: &Broker{cfg: Config{Dev: true}}}
	prod := &hook{b: &Broker{}}
	cl := &mqtt.Client{ID: "anon-1"}
	for _, tc := range []struct {
		topic     string
		dev, prod bool
	}{
		{"sensors/1", true, false},
		{"a/b/c/d", true, false},
		{"user/alice/newMessage", false, false}, // anonymous
		{"presence/alice", false, false},
		{"group/g1/newMessage", false, false},
		{"$SYS/broker/uptime", true, false},
		{"$link/x", false, false},
	} {
		if got := dev.OnACLCheck(cl, tc.topic, false); got != tc.dev {
			t.Errorf("dev delivery of %q: %v", tc.topic, got)
		}
		if got := prod.OnACLCheck(cl, tc.topic, false); got != tc.prod {
			t.Errorf("delivery of %q outside dev mode: %v", tc.topic, got)
		}
	}
	if n := testing.AllocsPerRun(1000, func() { dev.OnACLCheck(cl, "sensors/1", false) }); n != 0 {
		t.Errorf("dev delivery check of an open topic allocates %v times", n)
	}
}

func BenchmarkDeliveryACL(b *testing.B) {
	dev := &hook{b: &Broker{cfg: Config{Dev: true}}}
	prod := &hook{b: &Broker{}}
	anon := &mqtt.Client{ID: "anon-1"}
	alice := &mqtt.Client{ID: "alice/phone"} // principal from the client ID
	for _, bc := range []struct {
		name  string
		h     *hook
		cl    *mqtt.Client
		topic string
	}{
		{"dev/open", dev, anon, "sensors/1"},
		{"dev/chat", dev, alice, "user/alice/newMessage"},
		{"prod/chat", prod, alice, "user/alice/newMessage"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				bc.h.OnACLCheck(bc.cl, bc.topic, false)
			}
		})
	}
}

// Shared subscriptions never get chat topics: the selection of shared
// subscribers is emptied for them and left alone otherwise.
func TestSharedSubscribersNeverGetChat(t *testing.T) {
	h := &hook{b: &Broker{cfg: Config{Dev: true}}}
	subs := func() *mqtt.Subscribers {
		return &mqtt.Subscribers{
			Shared:        map[string]map[string]packets.Subscription{"$share/g/#": {"alice/phone": {Filter: "$share/g/#"}}},
			Subscriptions: map[string]packets.Subscription{"bob/phone": {Filter: "#"}},
		}
	}
	for _, topic := range []string{wire.DirectTopic("alice"), wire.PresenceTopic("alice"), wire.GroupTopic("g1"), "user/x"} {
		s := h.OnSelectSubscribers(subs(), packets.Packet{TopicName: topic})
		s.SelectShared()
		s.MergeSharedSelected()
		if _, ok := s.Subscriptions["alice/phone"]; ok || len(s.Subscriptions) != 1 {
			t.Errorf("%s: subscribers %v", topic, s.Subscriptions)
		}
	}
	s := h.OnSelectSubscribers(subs(), packets.Packet{TopicName: "sensors/1"})
	if len(s.SharedSelected) == 0 {
		s.SelectShared()
	}
	s.MergeSharedSelected()
	if _, ok := s.Subscriptions["alice/phone"]; !ok {
		t.Errorf("sensors/1: shared subscriber not selected: %v", s.Subscriptions)
	}
}

// In dev mode wildcard filters that overlap the chat subtrees are
// granted; each delivery is checked by name, so a subscriber to # gets
// every open topic and, of the chat topics, only what it could have
// subscribed to by name. Shared subscriptions get no chat topic at all.
func TestDevModeWildcards(t *testing.T) {
	e := startBroker(t, func(c *Config) { c.Dev = true })
	e.mem.set("g1", "alice", true)
	e.mem.set("g1", "bob", true) // carol is no member; alice may see bob's presence

	anon, _, err := mqtttest.Dial(t, e.addr, mqtttest.Options{ClientID: "anon-wild"})
	if err != nil {
		t.Fatal(err)
	}
	alice, bob, carol := mustV5(t, e.addr, "alice", "phone"), mustV5(t, e.addr, "bob", "phone"), mustV5(t, e.addr, "carol", "phone")
	aliceShared := mustV5(t, e.addr, "alice", "shared")
	for _, c := range []*mqtttest.Client{anon, alice, bob, carol} {
		for _, f := range []string{"#", "+/+/+", "user/#", "presence/+", "group/+/newMessage"} {
			if code := c.Sub(t, f)[0]; code != 1 {
				t.Fatalf("subscribe %s: reason 0x%02x, want granted QoS 1", f, code)
			}
		}
	}
	aliceShared.MustSub(t, "$share/g/#")
	for _, f := range []string{"user/bob/newMessage", "$share/g/user/alice/+", "$link/#"} {
		if code := alice.Sub(t, f)[0]; code != 0x87 {
			t.Fatalf("subscribe %s: reason 0x%02x, want 0x87", f, code)
		}
	}

	if code, _ := bob.Pub(t, "user/alice/newMessage", 1, `{"cid":"dm1","type":"text","body":"hi alice"}`); code != 0 {
		t.Fatalf("direct message: 0x%02x", code)
	}
	if code, _ := bob.Pub(t, "group/g1/newMessage", 1, `{"cid":"gm1","type":"text","body":"hi group"}`); code != 0 {
		t.Fatalf("group message: 0x%02x", code)
	}
	if err := e.b.Publish(wire.Outbound{Topic: wire.PresenceTopic("bob"), Payload: []byte(`{"status":"online"}`), Retain: true, QoS: 1}); err != nil {
		t.Fatal(err)
	}
	if code, _ := anon.Pub(t, "sensors/1", 1, "21.5"); code != 0 {
		t.Fatalf("sensors/1: 0x%02x", code)
	}
	want := map[*mqtttest.Client][]string{
		anon:        {"sensors/1"},
		carol:       {"sensors/1"},
		alice:       {"user/alice/newMessage", "group/g1/newMessage", "presence/bob", "sensors/1"},
		bob:         {"user/bob/newMessage", "group/g1/newMessage", "presence/bob", "sensors/1"},
		aliceShared: {"sensors/1"},
	}
	names := map[*mqtttest.Client]string{anon: "anonymous", carol: "carol", alice: "alice", bob: "bob", aliceShared: "alice's $share/g/#"}
	// Publishes of different senders may arrive in either order (a chat
	// publish is delivered after its PUBACK), so each client's first
	// messages are compared as a set; then a second open-topic marker:
	// each subscriber's queue is in order, and a duplicate from
	// overlapping filters is queued with the first copy, so anything
	// before the marker is an extra delivery.
	got := map[*mqtttest.Client][]string{}
	for c, topics := range want {
		for range topics {
			got[c] = append(got[c], c.Next(t).Topic)
		}
	}
	if code, _ := anon.Pub(t, "sensors/2", 1, "21.6"); code != 0 {
		t.Fatalf("sensors/2: 0x%02x", code)
	}
	for c, topics := range want {
		for m := c.Next(t); m.Topic != "sensors/2"; m = c.Next(t) {
			got[c] = append(got[c], m.Topic)
		}
		g := slices.Sorted(slices.Values(got[c]))
		w := slices.Sorted(slices.Values(topics))
		if !slices.Equal(g, w) {
			t.Errorf("%s got %v, want %v (once each: overlapping filters deliver once)", names[c], got[c], topics)
		}
	}

	// A late # subscriber gets the retained presence only if it may see it.
	late := mustV5(t, e.addr, "carol", "late")
	if code := late.Sub(t, "presence/bob")[0]; code != 0x87 {
		t.Fatalf("carol subscribed to bob's presence by name: 0x%02x", code)
	}
	lateAnon, _, err := mqtttest.Dial(t, e.addr, mqtttest.Options{ClientID: "anon-late"})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []*mqtttest.Client{late, lateAnon} {
		c.MustSub(t, "#")
		if code, _ := anon.Pub(t, "sensors/2", 1, "x"); code != 0 {
			t.Fatal(code)
		}
		if m := c.Next(t); m.Topic != "sensors/2" {
			t.Errorf("late # subscriber got %s before sensors/2", m.Topic)
		}
	}
	lateAlice := mustV5(t, e.addr, "alice", "late")
	lateAlice.MustSub(t, "#")
	if m := lateAlice.Next(t); m.Topic != "presence/bob" || !m.Retain {
		t.Errorf("alice's late # subscription: %s retain=%v, want the retained presence/bob", m.Topic, m.Retain)
	}
}
