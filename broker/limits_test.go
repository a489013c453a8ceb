package broker

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"testing"
	"time"

	pahopk "github.com/eclipse/paho.golang/packets"

	"github.com/edgechat/edgechat/internal/ratelimit"
	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/internal/testutil/mqtttest"
)

// Publishes are limited per user, across topics and connections; a v5
// QoS 1 publish over the limit gets 0x97, and the bucket refills with
// the (injected) clock.
func TestPublishQuota(t *testing.T) {
	e := startBroker(t, func(c *Config) { c.PublishRate = ratelimit.Spec{Rate: 1, Burst: 3} })
	bob := mustV5(t, e.addr, "bob", "phone")
	bob.MustSub(t, "user/bob/typing")
	alice := mustV5(t, e.addr, "alice", "phone")
	laptop := mustV5(t, e.addr, "alice", "laptop")

	for i := 0; i < 3; i++ {
		if code, _ := alice.Pub(t, "user/bob/typing", 1, ""); code != 0 {
			t.Fatalf("publish %d: 0x%02x", i, code)
		}
	}
	code, pr := alice.Pub(t, "user/bob/typing", 1, "")
	if code != 0x97 || !strings.HasPrefix(pr.Properties.ReasonString, "quota exceeded") {
		t.Fatalf("over the burst: 0x%02x %+v", code, pr.Properties)
	}
	// The same bucket for the user's other connection, other topics and heartbeats.
	if code, _ := laptop.Pub(t, "user/bob/newMessage", 1, `{"cid":"q","type":"text","body":"x"}`); code != 0x97 {
		t.Fatalf("second connection: 0x%02x", code)
	}
	if code, _ := laptop.Pub(t, "presence/alice/heartbeat", 1, ""); code != 0x97 {
		t.Fatalf("heartbeat: 0x%02x", code)
	}
	alice.Pub(t, "user/bob/typing", 0, "") // QoS 0: dropped
	// It has no answer: wait until it is counted, or it could be read
	// after the clock moves and take the refilled token.
	testutil.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		if v := testutil.CounterValue(t, e.b.m.dropped.WithLabelValues("user_typing", "quota")); v != 2 {
			return fmt.Errorf("dropped{user_typing,quota} = %v, want 2", v)
		}
		return nil
	})
	if e.chat.callCount() != 0 {
		t.Fatal("a publish over quota reached the ChatStore")
	}
	// Another user has their own bucket.
	carol := mustV5(t, e.addr, "carol", "phone")
	if code, _ := carol.Pub(t, "user/bob/typing", 1, ""); code != 0 {
		t.Fatalf("carol: 0x%02x", code)
	}

	e.clock.Advance(time.Second) // one token back
	if code, _ := laptop.Pub(t, "user/bob/typing", 1, `{"state":"stopped"}`); code != 0 {
		t.Fatalf("after refill: 0x%02x", code)
	}
	if code, _ := alice.Pub(t, "user/bob/typing", 1, ""); code != 0x97 {
		t.Fatalf("second after refill: 0x%02x", code)
	}

	// bob saw alice's 3, carol's, and alice's after the refill; nothing
	// else. Compared as a set: mochi delivers a QoS 1 publish after its
	// PUBACK, so publishes of different clients may arrive in either order.
	want := []string{
		`{"state":"typing","from":"alice"}`, `{"state":"typing","from":"alice"}`, `{"state":"typing","from":"alice"}`,
		`{"state":"typing","from":"carol"}`, `{"state":"stopped","from":"alice"}`,
	}
	var got []string
	for range want {
		got = append(got, string(bob.Next(t).Payload))
	}
	sort.Strings(got)
	sort.Strings(want)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("bob got %q, want %q", got, want)
	}
	if m, ok := bob.TryNext(); ok {
		t.Fatalf("extra message %q", m.Payload)
	}
	if v := testutil.CounterValue(t, e.b.m.dropped.WithLabelValues("user_typing", "quota")); v != 3 {
		t.Fatalf("dropped{user_typing,quota} = %v, want 3", v)
	}
}

// A 3.1.1 publish over quota is dropped and counted; the connection stays.
func TestPublishQuotaV3(t *testing.T) {
	e := startBroker(t, func(c *Config) { c.PublishRate = ratelimit.Spec{Rate: 1, Burst: 1} })
	bob := mustV5(t, e.addr, "bob", "phone")
	bob.MustSub(t, "user/bob/newMessage")
	alice, _, err := dialV3(t, e.addr, "alice/v3", "alice", "tok:alice")
	if err != nil {
		t.Fatal(err)
	}
	first := alice.Publish("user/bob/newMessage", 1, false, `{"cid":"v1","type":"text","body":"one"}`)
	if !first.WaitTimeout(waitFor) || first.Error() != nil {
		t.Fatalf("first: %v", first.Error())
	}
	over := alice.Publish("user/bob/newMessage", 1, false, `{"cid":"v2","type":"text","body":"over"}`)
	testutil.CheckFor(t, waitFor, 5*time.Millisecond, func() error {
		if v := testutil.CounterValue(t, e.b.m.dropped.WithLabelValues("direct", "quota")); v != 1 {
			return fmt.Errorf("dropped{direct,quota} = %v", v)
		}
		return nil
	})
	e.clock.Advance(time.Second)
	next := alice.Publish("user/bob/newMessage", 1, false, `{"cid":"v3","type":"text","body":"after"}`)
	if !next.WaitTimeout(waitFor) || next.Error() != nil {
		t.Fatalf("after refill: %v", next.Error())
	}
	for _, want := range []string{"v1", "v3"} {
		if got := envOf(t, bob.Next(t).Payload); got.CID != want {
			t.Fatalf("bob got %+v, want %s", got, want)
		}
	}
	select {
	case <-over.Done():
		t.Fatal("publish over quota acknowledged")
	default:
	}
	if !alice.IsConnectionOpen() {
		t.Fatal("disconnected")
	}
}

// Connection attempts are limited per IP before the token is verified.
func TestConnectRate(t *testing.T) {
	e := startBroker(t, func(c *Config) { c.ConnectRate = ratelimit.Spec{Rate: 1, Burst: 3} })
	for i := 0; i < 3; i++ {
		mustV5(t, e.addr, "alice", fmt.Sprintf("d%d", i))
	}
	// Each session is done with its token (checked again once it is
	// established) when presence hears of it.
	testutil.CheckFor(t, waitFor, time.Millisecond, func() error {
		n := 0
		for _, ev := range e.pres.get() {
			if strings.HasPrefix(ev, "connected alice ") {
				n++
			}
		}
		if n != 3 {
			return fmt.Errorf("%d sessions established, want 3", n)
		}
		return nil
	})
	verified := e.ver.n.Load()
	_, ca, _ := mqtttest.Dial(t, e.addr, mqtttest.Options{ClientID: "alice/d3", Username: "alice", Password: "tok:alice"})
	if ca == nil || ca.ReasonCode != 0x9F || ca.Properties == nil || !strings.HasPrefix(ca.Properties.ReasonString, "connection rate exceeded") {
		t.Fatalf("CONNACK %+v, want 0x9F", ca)
	}
	if _, code, err := dialV3(t, e.addr, "alice/v3", "alice", "garbage"); code != 3 || err == nil {
		t.Fatalf("v3: return code %d (%v), want 3", code, err)
	}
	if n := e.ver.n.Load(); n != verified {
		t.Fatalf("refused connections verified %d tokens", n-verified)
	}
	if v := testutil.CounterValue(t, e.b.m.refused.WithLabelValues("connect_rate")); v != 2 {
		t.Fatalf("refused{connect_rate} = %v", v)
	}
	testutil.CheckFor(t, waitFor, 5*time.Millisecond, func() error {
		if n := e.b.Connections(); n != 3 {
			return fmt.Errorf("%d connections", n)
		}
		return nil
	})
	e.clock.Advance(time.Second)
	mustV5(t, e.addr, "alice", "d4")
	if _, ca, _ := mqtttest.Dial(t, e.addr, mqtttest.Options{ClientID: "alice/d5", Username: "alice", Password: "tok:alice"}); ca == nil || ca.ReasonCode != 0x9F {
		t.Fatalf("second after refill: %+v", ca)
	}
}

// WebSocket connections count by the HTTP request's RemoteAddr (which the
// gateway rewrites behind a trusted proxy), not the socket's peer.
func TestConnectRateWebSocketByRequestAddr(t *testing.T) {
	e := startBroker(t, func(c *Config) { c.ConnectRate = ratelimit.Spec{Rate: 1, Burst: 1} })
	h := e.b.WebSocketHandler()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.RemoteAddr = r.Header.Get("X-Test-Client") // what the gateway does for a trusted proxy
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	url := "ws" + strings.TrimPrefix(srv.URL, "http")
	connect := func(client, id string) byte {
		t.Helper()
		ws, _, err := dialWS(t, url, http.Header{"X-Test-Client": {client}}, "mqtt")
		if err != nil {
			t.Fatal(err)
		}
		_, ca, _ := mqtttest.Connect(t, pahopk.NewThreadSafeConn(newWSConn(ws)), mqtttest.Options{ClientID: "alice/" + id, Username: "alice", Password: "tok:alice"})
		if ca == nil {
			t.Fatalf("%s: no CONNACK", id)
		}
		return ca.ReasonCode
	}
	if code := connect("203.0.113.7:1000", "w1"); code != 0 {
		t.Fatalf("first: 0x%02x", code)
	}
	if code := connect("203.0.113.7:2000", "w2"); code != 0x9F {
		t.Fatalf("same client IP: 0x%02x", code)
	}
	if code := connect("2001:db8:1:2:aaaa::1", "w3"); code != 0 {
		t.Fatalf("other client IP: 0x%02x", code)
	}
	if code := connect("[2001:db8:1:2:bbbb::2]:443", "w4"); code != 0x9F {
		t.Fatalf("same IPv6 /64: 0x%02x", code)
	}
	mustV5(t, e.addr, "alice", "tcp") // 127.0.0.1: its own bucket
}

func TestRateLimitConfig(t *testing.T) {
	b, err := New(Config{Dev: true}, Deps{})
	if err != nil {
		t.Fatal(err)
	}
	if b.lim.publish.Spec() != DefaultPublishRate || b.lim.connect.Spec() != DefaultConnectRate {
		t.Fatalf("defaults: %v %v", b.lim.publish.Spec(), b.lim.connect.Spec())
	}
	if b.lim.subscribe.Spec() != DefaultSubscribeRate || b.lim.accept.Spec() != (ratelimit.Spec{Rate: 20, Burst: 60}) || b.cfg.ConnectionsPerUser != DefaultConnectionsPerUser {
		t.Fatalf("defaults: subscribe %v, accept %v, connections per user %d", b.lim.subscribe.Spec(), b.lim.accept.Spec(), b.cfg.ConnectionsPerUser)
	}
	b, err = New(Config{Dev: true, ConnectRate: ratelimit.Unlimited, SubscribeRate: ratelimit.Unlimited, ConnectionsPerUser: -1}, Deps{})
	if err != nil {
		t.Fatal(err)
	}
	if !b.lim.accept.Spec().IsUnlimited() || !b.lim.subscribe.Spec().IsUnlimited() || b.cfg.ConnectionsPerUser != -1 {
		t.Fatalf("off: accept %v, subscribe %v, connections per user %d", b.lim.accept.Spec(), b.lim.subscribe.Spec(), b.cfg.ConnectionsPerUser)
	}
	b, err = New(Config{Dev: true, PublishRate: ratelimit.Unlimited, ConnectRate: ratelimit.Spec{Rate: 2, Burst: 4}}, Deps{})
	if err != nil {
		t.Fatal(err)
	}
	if !b.lim.publish.Spec().IsUnlimited() || b.lim.connect.Spec() != (ratelimit.Spec{Rate: 2, Burst: 4}) {
		t.Fatalf("configured: %v %v", b.lim.publish.Spec(), b.lim.connect.Spec())
	}
	for _, bad := range []Config{
		{Dev: true, PublishRate: ratelimit.Spec{Rate: 0, Burst: 5}},
		{Dev: true, ConnectRate: ratelimit.Spec{Rate: 5, Burst: 0}},
		{Dev: true, SubscribeRate: ratelimit.Spec{Rate: 5, Burst: 0}},
		{Dev: true, RateLimitKeys: -1},
	} {
		if _, err := New(bad, Deps{}); !errors.Is(err, ErrBadConfig) {
			t.Errorf("%+v: err %v, want ErrBadConfig", bad, err)
		}
	}
}
