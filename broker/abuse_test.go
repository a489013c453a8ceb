package broker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/internal/testutil/mqtttest"
)

// One account may hold at most DefaultConnectionsPerUser live
// connections on a node: a CONNECT over that is refused 0x97 (3.1.1:
// 3), whatever its device ID; a reconnection of a client ID already
// connected (a takeover) is not one more.
func TestLiveConnectionsPerUserAreCapped(t *testing.T) {
	e := startBroker(t, nil)
	limit := DefaultConnectionsPerUser
	for i := range limit {
		mustV5(t, e.addr, "alice", fmt.Sprintf("d%d", i))
	}
	_, ca, err := mqtttest.Dial(t, e.addr, mqtttest.Options{ClientID: "alice/one-too-many", Username: "alice", Password: "tok:alice"})
	if ca == nil || ca.ReasonCode != 0x97 || ca.Properties == nil || ca.Properties.ReasonString == "" {
		t.Fatalf("connection %d of one user: CONNACK %+v (%v), want 0x97 quota exceeded", limit+1, ca, err)
	}
	t.Logf("refused: %q", ca.Properties.ReasonString)
	if _, code, err := dialV3(t, e.addr, "alice/v3", "alice", "tok:alice"); code != 3 || err == nil {
		t.Fatalf("3.1.1 connection %d: return code %d (%v), want 3", limit+1, code, err)
	}
	// A takeover of a connected client ID is the same device: accepted.
	mustV5(t, e.addr, "alice", "d0")
	// Another user has their own count.
	mustV5(t, e.addr, "bob", "phone")
	if v := testutil.CounterValue(t, e.b.m.refused.WithLabelValues("connect_quota")); v != 2 {
		t.Fatalf("refused{connect_quota} = %v, want 2", v)
	}
	// A connection that ends frees its place.
	d1, _, err := mqtttest.Open(e.addr, mqtttest.Options{ClientID: "alice/d1", Username: "alice", Password: "tok:alice"})
	if err != nil {
		t.Fatal(err) // a takeover of d1
	}
	_ = d1.Disconnect(&paho.Disconnect{})
	// The count the cap reads, not the sessions index: the connection
	// that d1's takeover replaced may end after the one that took over.
	testutil.CheckFor(t, waitFor, 5*time.Millisecond, func() error {
		e.b.userConns.mu.Lock()
		n := len(e.b.userConns.m["alice"])
		e.b.userConns.mu.Unlock()
		if n != limit-1 {
			return fmt.Errorf("alice has %d client IDs counted, want %d", n, limit-1)
		}
		return nil
	})
	mustV5(t, e.addr, "alice", "new")
}

// A client that loops SUBSCRIBE / UNSUBSCRIBE makes its node commit a
// route and withdraw it each time: the subscriptions that add a route are
// limited per user (DefaultSubscribeRate), refused 0x97 in the SUBACK
// over the limit (3.1.1: 0x80), the connection kept; a filter that
// another local client holds already costs nothing.
func TestSubscribeLoopIsRateLimited(t *testing.T) {
	c := startClusterOf(t, 2, func(c *clusterEnv) {
		c.config = func(cfg *Config) { cfg.SubscribeRate = DefaultSubscribeRate }
	})
	n2 := c.nodes["n2"]
	bob := mustV5(t, n2.addr, "bob", "phone")
	laptop := mustV5(t, n2.addr, "bob", "laptop")
	laptop.MustSub(t, "user/bob/newMessage") // one token
	burst := DefaultSubscribeRate.Burst
	loops := burst + 20
	refused := 0
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	unsub := func(cl *mqtttest.Client, filters ...string) {
		t.Helper()
		if _, err := cl.Unsubscribe(ctx, &paho.Unsubscribe{Topics: filters}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range loops {
		switch codes := bob.Sub(t, "user/bob/typing"); {
		case codes[0] == 0x97:
			refused++
		case codes[0] >= 0x80:
			t.Fatalf("loop %d: SUBACK 0x%02x", i, codes[0])
		case refused > 0:
			t.Fatalf("loop %d: granted after a refusal (the clock is frozen)", i)
		}
		unsub(bob, "user/bob/typing")
	}
	adds := metric(t, n2, "edgechat_route_proposals_total", map[string]string{"op": "add", "result": "ok"})
	t.Logf("%d of %d subscriptions refused; %v routes added", refused, loops, adds)
	if refused != loops-(burst-1) {
		t.Fatalf("%d of %d SUBSCRIBE/UNSUBSCRIBE loops refused, want %d (burst %d, one token taken by the laptop): %v route commits (and their withdrawals) from one user",
			refused, loops, loops-(burst-1), burst, adds)
	}
	// A refused filter was not subscribed: nothing holds it, its route
	// goes.
	waitLocalSubscribers(t, n2, "user/bob/typing", 0)
	if subs := n2.b.Server().Topics.Subscribers("user/bob/typing").Subscriptions; len(subs) != 0 {
		t.Fatalf("subscribers of user/bob/typing after refusals: %v", subs)
	}
	c.waitRoute(t, "n2", "user/bob/typing", false)
	// The refusal says why, and the connection stays.
	sa, err := bob.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "user/bob/typing", QoS: 1}, {Topic: "user/bob/newMessage", QoS: 1}}})
	if sa == nil || len(sa.Reasons) != 2 || sa.Reasons[0] != 0x97 || sa.Reasons[1] != 1 || sa.Properties == nil || sa.Properties.ReasonString != subscribeQuotaReason {
		t.Fatalf("SUBACK %+v (%v), want 0x97 for the new filter with the reason, 0x01 for the one the laptop holds (no route to add)", sa, err)
	}
	unsub(bob, "user/bob/newMessage")
	if code := v3SubCode(t, n2.addr, "bob", "user/bob/receipts"); code != 0x80 {
		t.Fatalf("3.1.1 SUBACK 0x%02x, want 0x80", code)
	}
	if v := testutil.CounterValue(t, n2.b.m.refused.WithLabelValues("subscribe_quota")); v != float64(refused+2) {
		t.Fatalf("refused{subscribe_quota} = %v, want %d", v, refused+2)
	}
	if v := testutil.CounterValue(t, n2.b.m.refused.WithLabelValues("subscribe")); v != 0 {
		t.Fatalf("refused{subscribe} = %v, want 0", v)
	}
	// Another user has their own bucket; the bucket refills.
	carol := mustV5(t, n2.addr, "carol", "phone")
	carol.MustSub(t, "user/carol/typing")
	n2.clock.Advance(time.Second)
	bob.MustSub(t, "user/bob/typing")
}

// Connections that send nothing (no CONNECT, no TLS handshake) count
// against the client IP at accept: past the accept bucket they are closed
// at once instead of each holding a goroutine (and, on MQTTS, a TLS
// handshake) for ConnectTimeout.
func TestSilentConnectionsAreLimitedAtAccept(t *testing.T) {
	srvCfg, _ := selfSigned(t)
	e := startBroker(t, func(c *Config) {
		c.ConnectRate = DefaultConnectRate
		c.MQTTSAddr, c.TLS = "127.0.0.1:0", srvCfg
	})
	// One bucket per client IP for both listeners: twice the CONNECT
	// bucket, so the first 60 stay open (until ConnectTimeout), the rest
	// of the 400 are closed.
	held := acceptSpec(DefaultConnectRate).Burst
	for li, addr := range []string{e.b.MQTTAddr(), e.b.MQTTSAddr()} {
		const n = 200
		conns := make([]net.Conn, 0, n)
		for range n {
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = conn.Close() })
			conns = append(conns, conn)
		}
		// Each read waits up to a second, all at once: a connection the
		// server closed reads EOF (or a reset) at once, one it holds open
		// times out.
		var closed atomic.Int32
		var wg sync.WaitGroup
		deadline := time.Now().Add(time.Second)
		for _, conn := range conns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_ = conn.SetReadDeadline(deadline)
				if _, err := conn.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
					closed.Add(1)
				}
			}()
		}
		wg.Wait()
		t.Logf("%s: %d of %d silent connections closed within a second (accept_rate %v)", addr, closed.Load(), n, testutil.CounterValue(t, e.b.m.refused.WithLabelValues("accept_rate")))
		if closed.Load() == 0 {
			t.Errorf("%s: all %d silent connections from one IP held open (connect rate %v)", addr, n, DefaultConnectRate)
		} else if want := n - held*(1-li); int(closed.Load()) != want {
			t.Errorf("%s: %d of %d closed, want %d", addr, closed.Load(), n, want)
		}
	}
	// The bucket refills: a client connects again.
	e.clock.Advance(time.Second)
	mustV5(t, e.addr, "alice", "phone")
}
