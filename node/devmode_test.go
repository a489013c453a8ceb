package node_test

import (
	"context"
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
