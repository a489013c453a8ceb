package users

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgechat/edgechat/cluster/fsm/fsmtest"
	"github.com/edgechat/edgechat/internal/httpapi"
	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/internal/wire"
)

var _ Proposer = (*fsmtest.Harness)(nil)

// fakePublisher records what the service publishes.
type fakePublisher struct {
	mu  sync.Mutex
	out []wire.Outbound
}

var _ Publisher = (*fakePublisher)(nil)

func (p *fakePublisher) Publish(o wire.Outbound) error {
	p.mu.Lock()
	p.out = append(p.out, o)
	p.mu.Unlock()
	return nil
}

// events returns the events published to uid, in order.
func (p *fakePublisher) events(uid string) []wire.Event {
	p.mu.Lock()
	defer p.mu.Unlock()
	var evs []wire.Event
	for _, o := range p.out {
		if o.Topic == wire.EventsTopic(uid) {
			var ev wire.Event
			_ = json.Unmarshal(o.Payload, &ev)
			evs = append(evs, ev)
		}
	}
	return evs
}

func (p *fakePublisher) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.out)
}

func (p *fakePublisher) reset() {
	p.mu.Lock()
	p.out = nil
	p.mu.Unlock()
}

type env struct {
	t     testing.TB
	svc   *Service
	db    *badger.DB
	prop  *fsmtest.Harness
	clock *testutil.FakeClock
	mux   *http.ServeMux
	pub   *fakePublisher
	reg   *prometheus.Registry
}

func newEnv(t testing.TB) *env { return newEnvWith(t, nil) }

// newEnvWith lets a test adjust the service's deps.
func newEnvWith(t testing.TB, adjust func(*Deps)) *env {
	t.Helper()
	prop := fsmtest.New(t)
	e := &env{t: t, db: prop.DB, prop: prop,
		clock: testutil.NewFakeClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)),
		pub:   &fakePublisher{}, reg: prometheus.NewRegistry()}
	deps := Deps{DB: e.db, Proposer: e.prop, FSM: e.prop.FSM, Now: e.clock.Now, Publisher: e.pub, Registerer: e.reg}
	if adjust != nil {
		adjust(&deps)
	}
	var err error
	e.svc, err = New(deps)
	if err != nil {
		t.Fatal(err)
	}
	e.mux = http.NewServeMux()
	for _, r := range e.svc.Routes() {
		e.mux.HandleFunc(r.Method+" "+r.Pattern, r.Handler)
	}
	return e
}

type resp struct {
	Code   int
	Header http.Header
	Body   []byte
}

func (r resp) errCode() string {
	var v struct {
		Error struct{ Code string } `json:"error"`
	}
	_ = json.Unmarshal(r.Body, &v)
	return v.Error.Code
}

func (r resp) profile(t *testing.T) Profile {
	t.Helper()
	var p Profile
	if err := json.Unmarshal(r.Body, &p); err != nil {
		t.Fatalf("profile body %q: %v", r.Body, err)
	}
	return p
}

// do sends a request as user (no principal when user is "").
func (e *env) do(method, path, body, user string, hdr ...string) resp {
	e.t.Helper()
	req := httptest.NewRequest(method, path, bytes.NewBufferString(body))
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	if user != "" {
		req = req.WithContext(httpapi.WithPrincipal(req.Context(), wire.Principal{UserID: user}))
	}
	rec := httptest.NewRecorder()
	e.mux.ServeHTTP(rec, req)
	return resp{Code: rec.Code, Header: rec.Header(), Body: rec.Body.Bytes()}
}

// users creates profiles for uids (display name = uid unless "uid:Name").
func (e *env) users(uids ...string) {
	e.t.Helper()
	for _, u := range uids {
		uid, name, _ := strings.Cut(u, ":")
		if err := e.svc.CreateProfile(context.Background(), uid, name); err != nil {
			e.t.Fatal(err)
		}
	}
}

// state dumps every key and value under r/user/.
func (e *env) state() map[string]string {
	e.t.Helper()
	return fsmtest.Dump(e.t, e.db, "r/user/")
}

func (r resp) decode(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("body %q: %v", r.Body, err)
	}
}

// cacheCount reads edgechat_cache_requests_total{cache,result} (0 when
// the series does not exist yet).
func (e *env) cacheCount(cache, result string) float64 {
	e.t.Helper()
	v, _ := testutil.MetricValue(e.t, e.reg, "edgechat_cache_requests_total", map[string]string{"cache": cache, "result": result})
	return v
}

// follower starts a second node's users service that applies the same
// log as e (through e's proposer) into its own database.
func (e *env) follower() *Service {
	e.t.Helper()
	f := e.prop.NewFollower(e.t)
	svc, err := New(Deps{DB: f.DB(), Proposer: e.prop, FSM: f, Now: e.clock.Now})
	if err != nil {
		e.t.Fatal(err)
	}
	return svc
}
