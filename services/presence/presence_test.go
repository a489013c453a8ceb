package presence

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgechat/edgechat/internal/httpapi"
	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/internal/wire"
)

// ---- fakes ----

// testClock is testutil's clock as a presence Clock.
type testClock struct{ *testutil.FakeClock }

func newTestClock() testClock {
	return testClock{testutil.NewFakeClock(time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC))}
}

func (c testClock) NewTicker(d time.Duration) Ticker { return c.FakeClock.NewTicker(d) }

type recorder struct {
	mu   sync.Mutex
	msgs []wire.Outbound
	err  error
}

func (r *recorder) Publish(o wire.Outbound) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, o)
	return r.err
}

func (r *recorder) all() []wire.Outbound {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]wire.Outbound(nil), r.msgs...)
}

// statuses lists "uid:status" of every publish, in order.
func (r *recorder) statuses(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, o := range r.all() {
		var p wire.Presence
		if err := json.Unmarshal(o.Payload, &p); err != nil {
			t.Fatalf("payload %q: %v", o.Payload, err)
		}
		out = append(out, strings.TrimPrefix(o.Topic, "presence/")+":"+p.Status)
	}
	return out
}

// ---- helpers ----

const (
	interval = 10 * time.Second
	grace    = 5 * time.Second
)

type harness struct {
	t   *testing.T
	s   *Service
	clk testClock
	pub *recorder
	reg *prometheus.Registry
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	h := &harness{t: t, clk: newTestClock(), pub: &recorder{}, reg: prometheus.NewRegistry()}
	s, err := New(Config{Interval: interval, Grace: grace}, Deps{
		Publisher:  h.pub,
		Social:     Social{Contacts: pairs{"alice>bob": true}}, // bob may see alice
		Logger:     testutil.QuietLogger(),
		Registerer: h.reg,
		Clock:      h.clk,
	})
	if err != nil {
		t.Fatal(err)
	}
	h.s = s
	return h
}

// advance moves the fake clock by d in tick-sized steps, running the
// demotion check after each step as Run would.
func (h *harness) advance(d time.Duration) {
	for d > 0 {
		step := min(h.s.period, d)
		h.clk.Advance(step)
		h.s.tick()
		d -= step
	}
}

func (h *harness) expect(want ...string) {
	h.t.Helper()
	got := h.pub.statuses(h.t)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		h.t.Fatalf("publishes = %v, want %v", got, want)
	}
}

func (h *harness) expectStatus(uid, want string) {
	h.t.Helper()
	if got := h.s.Status(uid).Status; got != want {
		h.t.Fatalf("Status(%s) = %s, want %s", uid, got, want)
	}
}

// ---- state machine ----

func TestConnectPublishesOnlineRetained(t *testing.T) {
	h := newHarness(t)
	h.s.Connected("alice", "c1")
	msgs := h.pub.all()
	if len(msgs) != 1 {
		t.Fatalf("got %d publishes, want 1", len(msgs))
	}
	o := msgs[0]
	if o.Topic != "presence/alice" || !o.Retain || o.QoS != 1 {
		t.Fatalf("outbound = %+v, want retained QoS 1 on presence/alice", o)
	}
	want := `{"status":"online","lastSeen":"2026-11-28T12:00:00Z"}`
	if string(o.Payload) != want {
		t.Fatalf("payload = %s, want %s", o.Payload, want)
	}
	h.expectStatus("alice", wire.StatusOnline)
	// A second connection of the same user changes nothing visible.
	h.s.Connected("alice", "c2")
	h.expect("alice:online")
}

func TestUnknownUserIsOffline(t *testing.T) {
	h := newHarness(t)
	p := h.s.Status("nobody")
	if p.Status != wire.StatusOffline || !p.LastSeen.IsZero() {
		t.Fatalf("Status = %+v, want offline with zero lastSeen", p)
	}
	h.expect()
}

func TestMissedHeartbeatsDemote(t *testing.T) {
	h := newHarness(t)
	h.s.Connected("alice", "c1")
	start := h.clk.Now()

	h.advance(3*interval - time.Second)
	h.expect("alice:online")
	h.advance(time.Second)
	h.expect("alice:online", "alice:inactive")
	h.expectStatus("alice", wire.StatusInactive)

	h.advance(2*interval - time.Second)
	h.expect("alice:online", "alice:inactive")
	h.advance(time.Second)
	h.expect("alice:online", "alice:inactive", "alice:offline")

	// lastSeen stays at the last sign of life, not the demotion time.
	msgs := h.pub.all()
	var p wire.Presence
	if err := json.Unmarshal(msgs[2].Payload, &p); err != nil {
		t.Fatal(err)
	}
	if !p.LastSeen.Equal(start) {
		t.Fatalf("offline lastSeen = %v, want %v", p.LastSeen, start)
	}
	// Still connected (an open but idle tab): state kept, nothing more published.
	h.advance(10 * interval)
	h.expect("alice:online", "alice:inactive", "alice:offline")
	if _, ok := h.s.users["alice"]; !ok {
		t.Fatal("connected user dropped from state")
	}
}

func TestHeartbeatBringsBackOnlineOnce(t *testing.T) {
	h := newHarness(t)
	h.s.Connected("alice", "c1")
	h.advance(3 * interval)
	h.expect("alice:online", "alice:inactive")

	h.s.Heartbeat("alice")
	h.expect("alice:online", "alice:inactive", "alice:online")
	h.s.Heartbeat("alice")
	h.s.Heartbeat("alice")
	h.expect("alice:online", "alice:inactive", "alice:online")

	// Regular heartbeats keep the user online with no publishes.
	for range 20 {
		h.advance(interval)
		h.s.Heartbeat("alice")
	}
	h.expect("alice:online", "alice:inactive", "alice:online")

	// Offline, then one heartbeat: online again, exactly one publish.
	h.advance(5 * interval)
	h.expect("alice:online", "alice:inactive", "alice:online", "alice:inactive", "alice:offline")
	h.s.Heartbeat("alice")
	h.expect("alice:online", "alice:inactive", "alice:online", "alice:inactive", "alice:offline", "alice:online")
}

func TestDisconnectOfflineOnlyAfterGrace(t *testing.T) {
	h := newHarness(t)
	h.s.Connected("alice", "c1")
	seen := h.clk.Now()
	h.advance(time.Second)
	h.s.Disconnected("alice", "c1")

	h.advance(grace - time.Second)
	h.expect("alice:online")
	h.expectStatus("alice", wire.StatusOnline)

	h.advance(time.Second)
	h.expect("alice:online", "alice:offline")
	if len(h.s.users) != 0 {
		t.Fatalf("offline user with no connection still tracked: %v", h.s.users)
	}
	// The dropped user still reports when they were last seen.
	p := h.s.Status("alice")
	if p.Status != wire.StatusOffline || !p.LastSeen.Equal(seen) {
		t.Fatalf("Status = %+v, want offline last seen %v", p, seen)
	}
	h.advance(10 * interval)
	h.expect("alice:online", "alice:offline")
}

func TestReconnectWithinGraceNeverShowsOffline(t *testing.T) {
	h := newHarness(t)
	h.s.Connected("alice", "c1")
	h.s.Disconnected("alice", "c1")
	h.advance(grace - time.Second)
	h.s.Connected("alice", "c2")
	h.advance(grace * 3)
	h.expect("alice:online")
	h.expectStatus("alice", wire.StatusOnline)
}

func TestTakeoverNeverShowsOffline(t *testing.T) {
	h := newHarness(t)
	h.s.Connected("alice", "conn-1")
	// Same MQTT client ID reconnects: the new connection is up before the
	// old one's will fires.
	h.s.Connected("alice", "conn-2")
	h.s.Disconnected("alice", "conn-1")
	h.advance(2 * grace)
	h.s.Disconnected("alice", "conn-1") // a late duplicate changes nothing
	h.advance(2 * grace)
	h.expect("alice:online")
	h.expectStatus("alice", wire.StatusOnline)

	// Disconnect of an unknown user or connection is ignored.
	h.s.Disconnected("nobody", "x")
	h.s.Disconnected("alice", "never")
	h.s.Heartbeat("alice")
	h.advance(2 * grace)
	h.expectStatus("alice", wire.StatusOnline)
	h.expect("alice:online")
}

func TestTwoDevices(t *testing.T) {
	h := newHarness(t)
	h.s.Connected("alice", "phone")
	h.s.Connected("alice", "laptop")
	h.s.Disconnected("alice", "phone")
	for range 5 {
		h.advance(interval)
		h.s.Heartbeat("alice") // the laptop keeps beating
	}
	h.expect("alice:online")

	h.s.Disconnected("alice", "laptop")
	h.advance(grace)
	h.expect("alice:online", "alice:offline")
}

func TestHTTPHeartbeatOnly(t *testing.T) {
	h := newHarness(t)
	h.s.Heartbeat("carol")
	h.expect("carol:online")
	h.advance(3 * interval)
	h.expect("carol:online", "carol:inactive")
	h.advance(2 * interval)
	h.expect("carol:online", "carol:inactive", "carol:offline")
	if len(h.s.users) != 0 {
		t.Fatal("offline heartbeat-only user still tracked")
	}
}

func TestHeartbeatAfterLastDisconnectCancelsGrace(t *testing.T) {
	h := newHarness(t)
	h.s.Connected("alice", "c1")
	h.s.Disconnected("alice", "c1")
	h.s.Heartbeat("alice") // continues over HTTP
	h.advance(3*interval - time.Second)
	h.expect("alice:online")
	h.advance(time.Second)
	h.expect("alice:online", "alice:inactive")
}

func TestIdleConnectedUserDisconnects(t *testing.T) {
	h := newHarness(t)
	h.s.Connected("alice", "c1")
	h.advance(5 * interval)
	h.expect("alice:online", "alice:inactive", "alice:offline")
	h.s.Disconnected("alice", "c1")
	h.advance(2 * grace)
	h.expect("alice:online", "alice:inactive", "alice:offline")
	if len(h.s.users) != 0 {
		t.Fatal("offline user kept after its last connection ended")
	}
}

func TestClockJumpDemotesOnce(t *testing.T) {
	h := newHarness(t)
	h.s.Connected("alice", "c1")
	h.clk.Advance(time.Hour) // e.g. a stalled process: one late tick
	h.s.tick()
	h.expect("alice:online", "alice:offline")
}

// Heartbeats must not grow the timer wheel: a beating user holds one entry.
func TestHeartbeatDoesNotGrowWheel(t *testing.T) {
	h := newHarness(t)
	h.s.Connected("alice", "c1")
	for range 1000 {
		h.clk.Advance(100 * time.Millisecond)
		h.s.Heartbeat("alice")
	}
	h.s.tick()
	entries := 0
	for _, uids := range h.s.wheel {
		entries += len(uids)
	}
	if entries != 1 {
		t.Fatalf("%d wheel entries for one user, want 1", entries)
	}
	h.expect("alice:online")
}

func TestUsersAreIndependent(t *testing.T) {
	h := newHarness(t)
	h.s.Connected("alice", "a")
	h.advance(2 * interval)
	h.s.Connected("bob", "b")
	h.advance(interval)
	h.expect("alice:online", "bob:online", "alice:inactive")
	h.expectStatus("bob", wire.StatusOnline)
}

// Racing callers must leave the retained topic on the final status: the
// last publish per user equals Status.
func TestConcurrentPublishOrder(t *testing.T) {
	h := newHarness(t)
	users := []string{"alice", "bob", "carol"}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 300 {
				uid := users[(g+i)%len(users)]
				conn := fmt.Sprintf("c%d", g)
				switch i % 4 {
				case 0:
					h.s.Connected(uid, conn)
				case 1:
					h.s.Heartbeat(uid)
				case 2:
					h.s.Disconnected(uid, conn)
				case 3:
					h.clk.Advance(3 * time.Second)
					h.s.tick()
				}
			}
		}()
	}
	wg.Wait()
	h.advance(10 * interval) // let every user settle
	last := map[string]string{}
	for _, s := range h.pub.statuses(t) {
		uid, st, _ := strings.Cut(s, ":")
		if last[uid] == st {
			t.Fatalf("%s published %s twice in a row", uid, st)
		}
		last[uid] = st
	}
	for _, uid := range users {
		if got := h.s.Status(uid).Status; last[uid] != got {
			t.Fatalf("%s: last publish %q, Status %q", uid, last[uid], got)
		}
	}
}

func TestPublishErrorKeepsState(t *testing.T) {
	h := newHarness(t)
	h.pub.err = errors.New("broker down")
	h.s.Connected("alice", "c1")
	h.expectStatus("alice", wire.StatusOnline)
	if got := counterValue(t, h.reg, "edgechat_presence_publish_errors_total", nil); got != 1 {
		t.Fatalf("publish errors = %v, want 1", got)
	}
}

// ---- Run ----

func TestRunDemotesAndStops(t *testing.T) {
	h := newHarness(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.s.Run(ctx) }()
	testutil.CheckFor(t, 5*time.Second, time.Millisecond, func() error {
		if h.clk.LiveTickers() != 1 {
			return errors.New("ticker not started")
		}
		return nil
	})
	if err := h.s.Run(ctx); !errors.Is(err, ErrRunning) {
		t.Fatalf("second Run = %v, want ErrRunning", err)
	}
	h.s.Connected("alice", "c1")
	h.s.Disconnected("alice", "c1")
	testutil.CheckFor(t, 5*time.Second, time.Millisecond, func() error {
		h.clk.Advance(time.Second)
		// Status changes under the lock, the publish follows just after it.
		if got := h.pub.statuses(t); len(got) < 2 {
			return fmt.Errorf("publishes %v", got)
		}
		return nil
	})
	h.expect("alice:online", "alice:offline")
	cancel()
	if err := testutil.Receive(t, done, 5*time.Second); err != nil {
		t.Fatalf("Run = %v", err)
	}
	if n := h.clk.LiveTickers(); n != 0 {
		t.Fatalf("%d tickers left running", n)
	}
}

// ---- config and metrics ----

func TestNewValidates(t *testing.T) {
	if _, err := New(Config{}, Deps{}); !errors.Is(err, ErrConfig) {
		t.Fatalf("no publisher: %v", err)
	}
	if _, err := New(Config{Interval: -time.Second}, Deps{Publisher: &recorder{}}); !errors.Is(err, ErrConfig) {
		t.Fatalf("negative interval: %v", err)
	}
	s, err := New(Config{}, Deps{Publisher: &recorder{}})
	if err != nil {
		t.Fatal(err)
	}
	if s.interval != DefaultInterval || s.grace != DefaultGrace || s.period != time.Second {
		t.Fatalf("defaults: interval %v grace %v tick %v", s.interval, s.grace, s.period)
	}
	reg := prometheus.NewRegistry()
	if _, err := New(Config{}, Deps{Publisher: &recorder{}, Registerer: reg}); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{}, Deps{Publisher: &recorder{}, Registerer: reg}); err == nil {
		t.Fatal("registering twice in one registry succeeded")
	}
}

// counterValue reads a counter or gauge series; it must exist.
func counterValue(t *testing.T, g prometheus.Gatherer, name string, labels map[string]string) float64 {
	t.Helper()
	v, ok := testutil.MetricValue(t, g, name, labels)
	if !ok {
		t.Fatalf("metric %s%v not found", name, labels)
	}
	return v
}

func TestMetrics(t *testing.T) {
	h := newHarness(t)
	h.s.Connected("alice", "a")
	h.s.Connected("bob", "b")
	h.advance(3 * interval)
	h.s.Heartbeat("bob")
	gauge := func(st string) float64 {
		return counterValue(t, h.reg, "edgechat_presence_users", map[string]string{"status": st})
	}
	if on, in := gauge("online"), gauge("inactive"); on != 1 || in != 1 {
		t.Fatalf("gauges online=%v inactive=%v, want 1 and 1", on, in)
	}
	trans := func(to string) float64 {
		return counterValue(t, h.reg, "edgechat_presence_transitions_total", map[string]string{"to": to})
	}
	if on, in, off := trans("online"), trans("inactive"), trans("offline"); on != 3 || in != 2 || off != 0 {
		t.Fatalf("transitions online=%v inactive=%v offline=%v, want 3 2 0", on, in, off)
	}
	h.advance(5 * interval)
	if on, in := gauge("online"), gauge("inactive"); on != 0 || in != 0 {
		t.Fatalf("after offline: gauges online=%v inactive=%v", on, in)
	}
}

// ---- HTTP ----

// serve mounts the routes like the gateway does, with the principal set.
func serve(t *testing.T, s *Service, p *wire.Principal, method, path string) *httptest.ResponseRecorder {
	t.Helper()
	mux := http.NewServeMux()
	for _, rt := range s.Routes() {
		mux.HandleFunc(rt.Method+" "+rt.Pattern, rt.Handler)
	}
	req := httptest.NewRequest(method, path, nil)
	if p != nil {
		req = req.WithContext(httpapi.WithPrincipal(req.Context(), *p))
	}
	w := httptest.NewRecorder()
	mux.ServeHTTP(w, req)
	return w
}

func errCode(t *testing.T, w *httptest.ResponseRecorder) string {
	t.Helper()
	var body struct {
		Error struct{ Code string } `json:"error"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
		t.Fatalf("error body %q: %v", w.Body.String(), err)
	}
	return body.Error.Code
}

func TestHTTPRoutes(t *testing.T) {
	h := newHarness(t)
	alice := &wire.Principal{UserID: "alice"}
	bob := &wire.Principal{UserID: "bob"}
	eve := &wire.Principal{UserID: "eve"}

	for _, rt := range h.s.Routes() {
		if rt.Public {
			t.Fatalf("%s %s is public", rt.Method, rt.Pattern)
		}
	}

	w := serve(t, h.s, alice, "POST", "/presence/heartbeat")
	if w.Code != http.StatusNoContent || w.Body.Len() != 0 {
		t.Fatalf("heartbeat: %d %q", w.Code, w.Body)
	}
	h.expect("alice:online")

	w = serve(t, h.s, nil, "POST", "/presence/heartbeat")
	if w.Code != http.StatusUnauthorized || errCode(t, w) != httpapi.CodeUnauthorized {
		t.Fatalf("heartbeat without principal: %d %s", w.Code, w.Body)
	}

	for _, tc := range []struct {
		name   string
		who    *wire.Principal
		path   string
		status int
		want   string // presence status on 200, error code otherwise
	}{
		{"self", alice, "/presence/alice", 200, wire.StatusOnline},
		{"visible", bob, "/presence/alice", 200, wire.StatusOnline},
		{"not visible", eve, "/presence/alice", 403, httpapi.CodeForbidden},
		{"an admin sees what any user sees", &wire.Principal{UserID: "root", Admin: true}, "/presence/alice", 403, httpapi.CodeForbidden},
		{"self, never seen", eve, "/presence/eve", 200, wire.StatusOffline},
		{"bad uid", alice, "/presence/NOT-VALID", 400, httpapi.CodeValidation},
		{"no principal", nil, "/presence/alice", 401, httpapi.CodeUnauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := serve(t, h.s, tc.who, "GET", tc.path)
			if w.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", w.Code, tc.status, w.Body)
			}
			if tc.status != 200 {
				if got := errCode(t, w); got != tc.want {
					t.Fatalf("code %q, want %q", got, tc.want)
				}
				return
			}
			if ct := w.Header().Get("Content-Type"); ct != "application/json" {
				t.Fatalf("content type %q", ct)
			}
			var p wire.Presence
			if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil {
				t.Fatal(err)
			}
			if p.Status != tc.want {
				t.Fatalf("presence %+v, want %s", p, tc.want)
			}
		})
	}
	// A 403 leaks no presence.
	if w := serve(t, h.s, eve, "GET", "/presence/alice"); strings.Contains(w.Body.String(), "online") {
		t.Fatalf("403 body leaks status: %s", w.Body)
	}
}

// ---- benchmarks ----

type nopPublisher struct{}

func (nopPublisher) Publish(wire.Outbound) error { return nil }

func benchService(b *testing.B, users int) (*Service, testClock, []string) {
	b.Helper()
	clk := newTestClock()
	s, err := New(Config{}, Deps{Publisher: nopPublisher{}, Clock: clk})
	if err != nil {
		b.Fatal(err)
	}
	uids := make([]string, users)
	for i := range uids {
		uids[i] = fmt.Sprintf("user%06d", i)
		s.Connected(uids[i], "c")
	}
	return s, clk, uids
}

// BenchmarkHeartbeat is the steady state: a heartbeat of an online user
// (no status change, no publish) with 100k tracked users.
func BenchmarkHeartbeat(b *testing.B) {
	s, _, uids := benchService(b, 100_000)
	b.ReportAllocs()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		s.Heartbeat(uids[i%len(uids)])
		i++
	}
}

// BenchmarkTickSteady is one second of steady state with 100k connected
// users each beating every 10 s: the timed part is the tick alone (the
// time the state lock is held once per tick period).
func BenchmarkTickSteady(b *testing.B) {
	s, clk, uids := benchService(b, 100_000)
	b.ReportAllocs()
	b.ResetTimer()
	sec := 0
	for b.Loop() {
		b.StopTimer()
		clk.Advance(time.Second)
		for i := sec % 10; i < len(uids); i += 10 {
			s.Heartbeat(uids[i])
		}
		sec++
		b.StartTimer()
		s.tick()
	}
	if st := s.Status(uids[0]).Status; st != wire.StatusOnline {
		b.Fatalf("status %s", st)
	}
}
