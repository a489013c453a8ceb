package node_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgechat/edgechat/internal/testutil/mqtttest"
	"github.com/edgechat/edgechat/node/nodetest"
)

// In --dev mode a generic MQTT client must see what it would see on a
// plain mochi-mqtt server: the same scenario runs against both and the
// transcripts must match.
func TestDevModeBehavesLikePlainMochi(t *testing.T) {
	plain := startPlainMochi(t)
	dev := nodetest.StartNode(t, nodetest.WithDev())
	want := mqttScenario(t, plain)
	got := mqttScenario(t, strings.TrimPrefix(dev.MQTTURL, "tcp://"))
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("dev mode differs from plain mochi\nedgechat:\n  %s\nmochi:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
	if len(want) < 8 {
		t.Fatalf("scenario too short to mean anything: %v", want)
	}
}

func startPlainMochi(t *testing.T) string {
	t.Helper()
	srv := mqtt.New(&mqtt.Options{InlineClient: true})
	if err := srv.AddHook(new(allowAll), nil); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	if err := srv.AddListener(listeners.NewTCP(listeners.Config{ID: "t", Address: addr})); err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return addr
}

// allowAll is mochi's own allow-all behaviour without its YAML ledger.
type allowAll struct{ mqtt.HookBase }

func (h *allowAll) ID() string { return "allow-all" }
func (h *allowAll) Provides(b byte) bool {
	return b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck
}
func (h *allowAll) OnConnectAuthenticate(*mqtt.Client, packets.Packet) bool { return true }
func (h *allowAll) OnACLCheck(*mqtt.Client, string, bool) bool              { return true }

type recorder struct {
	mu  sync.Mutex
	got []string
}

func (r *recorder) add(s string) {
	r.mu.Lock()
	r.got = append(r.got, s)
	r.mu.Unlock()
}

func (r *recorder) snapshot() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.got...)
}

func dialPlain(t *testing.T, addr, id string, clean bool, expiry uint32, will *paho.WillMessage, rec *recorder) (*paho.Client, *paho.Connack) {
	t.Helper()
	o := mqtttest.Options{ClientID: id, KeepSession: !clean, SessionExpiry: expiry, Will: will}
	if rec != nil {
		o.OnPublish = func(p *paho.Publish) {
			rec.add(fmt.Sprintf("%s<-%s %s r=%v", id, p.Topic, p.Payload, p.Retain))
		}
	}
	c, ca, err := mqtttest.Dial(t, addr, o)
	if err != nil {
		t.Fatalf("connect %s: %v", id, err)
	}
	return c.Client, ca
}

// mqttScenario exercises retained messages, wills, session expiry with
// queued QoS 1 messages, shared subscriptions and topic aliases, and
// returns a sorted transcript of what the clients observed.
func mqttScenario(t *testing.T, addr string) []string {
	var log []string
	rec := &recorder{}
	ctx := context.Background()
	pub, ca := dialPlain(t, addr, "pub", true, 0, nil, nil)
	log = append(log, fmt.Sprintf("connack reason=%d sharedSub=%v retain=%v wildcard=%v", ca.ReasonCode,
		ca.Properties.SharedSubAvailable, ca.Properties.RetainAvailable, ca.Properties.WildcardSubAvailable))
	defer pub.Disconnect(&paho.Disconnect{})

	// Retained message, seen by a later subscriber.
	if _, err := pub.Publish(ctx, &paho.Publish{Topic: "demo/retained", QoS: 1, Retain: true, Payload: []byte("kept")}); err != nil {
		t.Fatal(err)
	}
	// mochi delivers a publish after its PUBACK, but finishes it before it
	// reads the client's next packet: a second round trip from the same
	// client makes sure the retained message is no longer in flight.
	if _, err := pub.Publish(ctx, &paho.Publish{Topic: "barrier/x", QoS: 1, Payload: []byte("-")}); err != nil {
		t.Fatal(err)
	}
	sub, _ := dialPlain(t, addr, "sub", true, 0, nil, rec)
	sa, err := sub.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{
		{Topic: "demo/#", QoS: 1}, {Topic: "$share/g/jobs/#", QoS: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	log = append(log, fmt.Sprintf("suback %v", sa.Reasons))

	// A persistent session that goes away and gets messages queued.
	sess, ca1 := dialPlain(t, addr, "sess", true, 300, nil, rec)
	if _, err := sess.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "queue/q", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	log = append(log, fmt.Sprintf("sess first present=%v", ca1.SessionPresent))
	_ = sess.Disconnect(&paho.Disconnect{})

	// A client with a will that drops without DISCONNECT.
	willConn, _ := dialPlain(t, addr, "willer", true, 0, &paho.WillMessage{Topic: "demo/will", QoS: 1, Payload: []byte("gone")}, nil)

	for i := 0; i < 3; i++ {
		if _, err := pub.Publish(ctx, &paho.Publish{Topic: "queue/q", QoS: 1, Payload: []byte(fmt.Sprintf("q%d", i))}); err != nil {
			t.Fatal(err)
		}
	}
	// Topic alias: the second publish names the topic by alias only.
	alias := uint16(1)
	if _, err := pub.Publish(ctx, &paho.Publish{Topic: "demo/alias", QoS: 1, Payload: []byte("a1"), Properties: &paho.PublishProperties{TopicAlias: &alias}}); err != nil {
		t.Fatal(err)
	}
	if _, err := pub.Publish(ctx, &paho.Publish{Topic: "", QoS: 1, Payload: []byte("a2"), Properties: &paho.PublishProperties{TopicAlias: &alias}}); err != nil {
		log = append(log, "alias-only publish refused: "+err.Error())
	}
	if _, err := pub.Publish(ctx, &paho.Publish{Topic: "jobs/1", QoS: 1, Payload: []byte("job")}); err != nil {
		t.Fatal(err)
	}
	willConn.TerminateConnectionForTest()

	sess2, ca2 := dialPlain(t, addr, "sess", false, 300, nil, rec)
	defer sess2.Disconnect(&paho.Disconnect{})
	log = append(log, fmt.Sprintf("sess resumed present=%v", ca2.SessionPresent))

	wantLines := 8 // retained, q0-q2, alias a1/a2, job, will
	deadline := time.Now().Add(5 * time.Second)
	for len(rec.snapshot()) < wantLines && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	// A set, not a list: mochi sends the PUBACK before it delivers, so a
	// subscriber that arrives in between may get a retained message both
	// as retained and live, on either server.
	seen := map[string]bool{}
	var got []string
	for _, l := range rec.snapshot() {
		if !seen[l] {
			seen[l] = true
			got = append(got, l)
		}
	}
	sort.Strings(got)
	_ = sub.Disconnect(&paho.Disconnect{})
	return append(log, got...)
}

// Wildcard subscriptions in --dev behave as on a plain mochi server for
// everything outside the chat subtrees: filters that overlap user/,
// group/ or presence/ are granted, retained messages come on SUBSCRIBE,
// a # subscriber can clear them with empty retained publishes, shared
// subscriptions split the work, and $SYS/# reads the broker's topics.
func TestDevModeWildcardsLikePlainMochi(t *testing.T) {
	plain := startPlainMochi(t)
	dev := nodetest.StartNode(t, nodetest.WithDev())
	want := wildcardScenario(t, plain)
	got := wildcardScenario(t, strings.TrimPrefix(dev.MQTTURL, "tcp://"))
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("dev mode differs from plain mochi\nedgechat:\n  %s\nmochi:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
	if len(want) < 10 {
		t.Fatalf("scenario too short to mean anything: %v", want)
	}
}

// collector records what one client receives, in order.
type collector struct {
	mu   sync.Mutex
	msgs []*paho.Publish
}

func (c *collector) add(p *paho.Publish) {
	c.mu.Lock()
	c.msgs = append(c.msgs, p)
	c.mu.Unlock()
}

func (c *collector) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.msgs)
}

// until waits for a message on topic and returns everything received up
// to and including it.
func (c *collector) until(t *testing.T, topic string) []*paho.Publish {
	t.Helper()
	var out []*paho.Publish
	checkFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		c.mu.Lock()
		defer c.mu.Unlock()
		for i, m := range c.msgs {
			if m.Topic == topic {
				out = append([]*paho.Publish(nil), c.msgs[:i+1]...)
				c.msgs = c.msgs[i+1:]
				return nil
			}
		}
		return fmt.Errorf("no %s yet (have %d messages)", topic, len(c.msgs))
	})
	return out
}

func dialCollector(t *testing.T, addr, id string) (*paho.Client, *collector) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	col := &collector{}
	c := paho.NewClient(paho.ClientConfig{Conn: conn, OnPublishReceived: []func(paho.PublishReceived) (bool, error){
		func(pr paho.PublishReceived) (bool, error) { col.add(pr.Packet); return true, nil }}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Connect(ctx, &paho.Connect{ClientID: id, KeepAlive: 30, CleanStart: true}); err != nil {
		t.Fatalf("connect %s: %v", id, err)
	}
	t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
	return c, col
}

func subscribeAll(t *testing.T, c *paho.Client, filters ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s := &paho.Subscribe{}
	for _, f := range filters {
		s.Subscriptions = append(s.Subscriptions, paho.SubscribeOptions{Topic: f, QoS: 1})
	}
	sa, err := c.Subscribe(ctx, s)
	if sa == nil {
		t.Fatalf("subscribe %v: %v", filters, err)
	}
	return fmt.Sprintf("suback %v: %v", filters, sa.Reasons)
}

func mustPublish(t *testing.T, c *paho.Client, topic, payload string, retain bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pr, err := c.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Retain: retain, Payload: []byte(payload)})
	if err != nil || pr.ReasonCode >= 0x80 {
		t.Fatalf("publish %s: %v %+v", topic, err, pr)
	}
}

// describe lists messages as "topic payload r=retain", $SYS by topic only
// (its values change from tick to tick), sorted and without duplicates
// (a retained message matched by two filters comes once per filter).
// Barriers are left out: mochi delivers a publish after its PUBACK, so the
// last one may reach a client that subscribed meanwhile, on either server.
func describe(msgs []*paho.Publish) string {
	seen := map[string]bool{}
	var out []string
	for _, m := range msgs {
		if strings.HasPrefix(m.Topic, "barrier/") {
			continue
		}
		s := fmt.Sprintf("%s %q r=%v", m.Topic, m.Payload, m.Retain)
		if strings.HasPrefix(m.Topic, "$SYS/") {
			s = m.Topic
		}
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	sort.Strings(out)
	return "[" + strings.Join(out, ", ") + "]"
}

func wildcardScenario(t *testing.T, addr string) []string {
	var log []string
	pub, _ := dialCollector(t, addr, "w-pub")
	mustPublish(t, pub, "sensors/1", "21.5", true)
	mustPublish(t, pub, "a/b", "x", true)
	mustPublish(t, pub, "deep/a/b/c", "d", true)
	// mochi delivers a publish after its PUBACK but before it reads the
	// client's next packet: one more round trip and the retained ones are
	// no longer in flight.
	mustPublish(t, pub, "barrier/0", "-", false)

	// One client with every kind of wildcard filter, the chat-overlapping
	// ones included; it gets the retained messages once per filter.
	wild, wcol := dialCollector(t, addr, "w-wild")
	log = append(log, subscribeAll(t, wild, "#", "+/+", "+/+/#", "user/#", "presence/+", "group/+/newMessage", "sensors/+"))
	mustPublish(t, wild, "barrier/1", "-", false) // its own publish comes back after the retained ones
	log = append(log, "retained on subscribe: "+describe(wcol.until(t, "barrier/1")))

	// Live publishes: each reaches the client once, whatever the overlap.
	mustPublish(t, pub, "sensors/1", "22.0", false)
	mustPublish(t, pub, "x/y/z", "z", false)
	mustPublish(t, pub, "barrier/2", "-", false)
	var got []*paho.Publish
	for _, m := range wcol.until(t, "barrier/2") {
		if !strings.HasPrefix(m.Topic, "barrier/") {
			got = append(got, m)
		}
	}
	log = append(log, fmt.Sprintf("live (%d): %s", len(got), describe(got)))

	// $SYS: not matched by #, readable by name.
	sys, scol := dialCollector(t, addr, "w-sys")
	log = append(log, subscribeAll(t, sys, "$SYS/broker/version", "$SYS/broker/clients/#"))
	scol.until(t, "$SYS/broker/version")
	log = append(log, subscribeAll(t, sys, "#"))
	mustPublish(t, sys, "barrier/3", "-", false)
	var dollar []*paho.Publish
	for _, m := range scol.until(t, "barrier/3") {
		if strings.HasPrefix(m.Topic, "$") && !strings.HasPrefix(m.Topic, "$SYS/broker/clients/") && m.Topic != "$SYS/broker/version" {
			dollar = append(dollar, m)
		}
	}
	log = append(log, "# matched $ topics: "+describe(dollar))

	// Shared subscriptions on # split the messages between the members.
	s1, c1 := dialCollector(t, addr, "w-share1")
	s2, c2 := dialCollector(t, addr, "w-share2")
	log = append(log, subscribeAll(t, s1, "$share/g/#"), subscribeAll(t, s2, "$share/g/#"))
	for i := 0; i < 6; i++ {
		mustPublish(t, pub, fmt.Sprintf("jobs/%d", i), "j", false)
	}
	checkFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		if n := c1.count() + c2.count(); n < 6 {
			return fmt.Errorf("shared group got %d of 6", n)
		}
		return nil
	})
	log = append(log, fmt.Sprintf("shared group got %d", c1.count()+c2.count()))

	// Clearing retained messages the way test suites do: subscribe to #,
	// publish an empty retained message to every retained topic seen.
	cleaner, ccol := dialCollector(t, addr, "w-clean")
	subscribeAll(t, cleaner, "#")
	mustPublish(t, cleaner, "barrier/4", "-", false)
	var cleared []string
	for _, m := range ccol.until(t, "barrier/4") {
		if m.Retain {
			mustPublish(t, cleaner, m.Topic, "", true)
			cleared = append(cleared, m.Topic)
		}
	}
	sort.Strings(cleared)
	log = append(log, fmt.Sprintf("cleared %v", cleared))
	mustPublish(t, cleaner, "barrier/4b", "-", false) // the last clearing publish is delivered
	check, kcol := dialCollector(t, addr, "w-check")
	subscribeAll(t, check, "#")
	mustPublish(t, check, "barrier/5", "-", false)
	log = append(log, "retained after clearing: "+describe(kcol.until(t, "barrier/5")))
	return log
}

// In --dev a # subscriber gets chat topics only as far as it could have
// subscribed to them by name: its own direct messages, presence it may
// see; an anonymous client none at all. Real services decide (the
// presence visibility rule, the archive's conversations).
func TestDevModeWildcardsKeepChatPrivate(t *testing.T) {
	n := nodetest.StartNode(t, nodetest.WithDev())
	aliceTok, bobTok, carolTok := n.NewUser(t, "alice"), n.NewUser(t, "bob"), n.NewUser(t, "carol")
	anon := mqtttest.MustDial(t, n.MQTTURL, mqtttest.Options{ClientID: "anon-wild"})
	anonPresence := mqtttest.MustDial(t, n.MQTTURL, mqtttest.Options{ClientID: "anon-presence"})
	alice := mustConnectV5(t, n.MQTTURL, "alice", "d1", aliceTok)
	bob := mustConnectV5(t, n.MQTTURL, "bob", "d1", bobTok)
	carol := mustConnectV5(t, n.MQTTURL, "carol", "d1", carolTok)
	for _, c := range []*mqtttest.Client{anon, alice, bob, carol} {
		if r := c.Sub(t, "#"); r[0] != 1 {
			t.Fatalf("subscribe #: %#x", r[0])
		}
	}
	if r := anonPresence.Sub(t, "presence/+", "user/#", "+/+/+", "+/+"); string(r) != "\x01\x01\x01\x01" {
		t.Fatalf("subscribe presence/+, user/#, +/+/+, +/+: %v", r)
	}

	if code, _ := bob.Pub(t, "user/alice/newMessage", 1, textMsg("dm-1", "for alice only")); code != 0 {
		t.Fatalf("direct message: %#x", code)
	}
	waitTopic := func(c *mqtttest.Client, topic string) {
		t.Helper()
		checkFor(t, 10*time.Second, 5*time.Millisecond, func() error {
			if len(c.Received(topic)) == 0 {
				return fmt.Errorf("no %s", topic)
			}
			return nil
		})
	}
	// A pipelined publish is delivered after its PUBACK is written: wait
	// for the delivery itself before publishing the marker, so that the
	// marker comes after it on every connection.
	waitTopic(alice, "user/alice/newMessage")
	if code, _ := anon.Pub(t, "sensors/1", 1, "21.5"); code != 0 {
		t.Fatalf("sensors/1: %#x", code)
	}
	for _, c := range []*mqtttest.Client{anon, anonPresence, alice, bob, carol} {
		waitTopic(c, "sensors/1") // delivered after the direct message, in order
	}
	if m := alice.Received("user/alice/newMessage"); len(m) != 1 || decodeEnvelope(t, m[0].Payload).Body != "for alice only" {
		t.Fatalf("alice's # got %d direct messages", len(m))
	}
	if m := bob.Received("user/bob/newMessage"); len(m) != 1 {
		t.Fatalf("bob's # got %d copies of his own message", len(m))
	}

	// bob goes offline: his presence changes; alice (a conversation) may
	// see it, carol and anonymous clients never.
	_ = bob.Disconnect(&paho.Disconnect{})
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		for _, m := range alice.Received("presence/bob") {
			if strings.Contains(string(m.Payload), `"offline"`) {
				return nil
			}
		}
		return errors.New("alice's # did not see bob go offline")
	})
	if code, _ := alice.Pub(t, "sensors/2", 1, "-"); code != 0 {
		t.Fatalf("sensors/2: %#x", code)
	}
	lateAlice := mustConnectV5(t, n.MQTTURL, "alice", "late", aliceTok)
	lateCarol := mustConnectV5(t, n.MQTTURL, "carol", "late", carolTok)
	lateAnon := mqtttest.MustDial(t, n.MQTTURL, mqtttest.Options{ClientID: "anon-late"})
	for _, c := range []*mqtttest.Client{lateAlice, lateCarol, lateAnon} {
		c.Sub(t, "#")
		// mochi writes the SUBACK before it queues the retained messages
		// the subscription matches: a second SUBSCRIBE on the same
		// connection is handled only after those are queued, so the
		// marker below comes after them.
		c.Sub(t, "barrier/late")
	}
	if code, _ := alice.Pub(t, "sensors/3", 1, "-"); code != 0 {
		t.Fatalf("sensors/3: %#x", code)
	}
	for _, c := range []*mqtttest.Client{anon, anonPresence, carol, lateAlice, lateCarol, lateAnon} {
		waitTopic(c, "sensors/3")
	}
	if len(lateAlice.Received("presence/bob")) == 0 {
		t.Error("alice's late # subscription did not get bob's retained presence")
	}
	for name, c := range map[string]*mqtttest.Client{"anonymous #": anon, "anonymous presence/+ user/# +/+/+ +/+": anonPresence, "late anonymous #": lateAnon} {
		for _, m := range c.Received("") {
			if strings.HasPrefix(m.Topic, "user/") || strings.HasPrefix(m.Topic, "presence/") || strings.HasPrefix(m.Topic, "group/") {
				t.Errorf("%s got %s %s", name, m.Topic, m.Payload)
			}
		}
	}
	for name, c := range map[string]*mqtttest.Client{"carol's #": carol, "carol's late #": lateCarol, "alice's #": alice, "bob's #": bob} {
		self := strings.Fields(name)[0]
		self = strings.TrimSuffix(self, "'s")
		for _, m := range c.Received("") {
			chat := strings.HasPrefix(m.Topic, "user/") || strings.HasPrefix(m.Topic, "presence/")
			mine := strings.HasPrefix(m.Topic, "user/"+self+"/") || m.Topic == "presence/"+self
			if chat && !mine && !(self == "alice" && m.Topic == "presence/bob") && !(self == "bob" && m.Topic == "presence/alice") {
				t.Errorf("%s got %s %s", name, m.Topic, m.Payload)
			}
		}
	}
}
