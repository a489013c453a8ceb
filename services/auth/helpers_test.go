package auth

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/edgechat/edgechat/broker/cluster/fsm"
	"github.com/edgechat/edgechat/internal/wire"
)

// testProposer applies each command synchronously through a real FSM, as
// a single-node Raft log would.
type testProposer struct {
	f    *fsm.FSM
	also []*fsm.FSM  // other replicas: the same log applied in the same order
	down atomic.Bool // true: refuse like a cluster without quorum

	mu   sync.Mutex
	next uint64
}

var _ Proposer = (*testProposer)(nil)

func (p *testProposer) Propose(ctx context.Context, t byte, payload []byte) (any, error) {
	if p.down.Load() {
		return nil, fmt.Errorf("test proposer: %w", wire.ErrUnavailable)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%w: %v", wire.ErrUnavailable, err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.next++
	res := p.f.Apply(&raft.Log{Index: p.next, Type: raft.LogCommand,
		Data: fsm.EncodeBatch([]fsm.Command{{Type: t, Payload: payload}})})
	rs := res.([]fsm.Result)
	for _, f := range p.also {
		f.Apply(&raft.Log{Index: p.next, Type: raft.LogCommand,
			Data: fsm.EncodeBatch([]fsm.Command{{Type: t, Payload: payload}})})
	}
	return rs[0].Value, rs[0].Err
}

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type fakeProfiles struct {
	mu    sync.Mutex
	names map[string]string
	err   error
}

func (f *fakeProfiles) CreateProfile(_ context.Context, uid, displayName string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return f.err
	}
	f.names[uid] = displayName
	return nil
}

func (f *fakeProfiles) get(uid string) (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, ok := f.names[uid]
	return n, ok
}

type env struct {
	t        *testing.T
	svc      *Service
	db       *badger.DB
	prop     *testProposer
	clock    *fakeClock
	profiles *fakeProfiles
	keyDir   string
	mux      *http.ServeMux
	reg      *prometheus.Registry
}

var tinyArgon = Argon2Params{MemoryKiB: 64, Time: 1, Threads: 1}

func openDB(t *testing.T) *badger.DB {
	t.Helper()
	db, err := badger.Open(badger.DefaultOptions(t.TempDir()).WithLogger(nil).
		WithMemTableSize(8 << 20).WithValueThreshold(1 << 10).WithValueLogFileSize(8 << 20))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func newEnv(t *testing.T, mutate ...func(*Config)) *env {
	t.Helper()
	cfg := Config{KeyDir: t.TempDir() + "/keys", Argon2: tinyArgon}
	for _, m := range mutate {
		m(&cfg)
	}
	return newEnvWith(t, cfg, openDB(t))
}

func newEnvWith(t *testing.T, cfg Config, db *badger.DB) *env {
	t.Helper()
	e := &env{
		t: t, db: db,
		prop:     &testProposer{f: fsm.New(db, nil)},
		clock:    &fakeClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)},
		profiles: &fakeProfiles{names: map[string]string{}},
		keyDir:   cfg.KeyDir,
		reg:      prometheus.NewRegistry(),
	}
	svc, err := New(cfg, Deps{DB: db, Proposer: e.prop, FSM: e.prop.f, Profiles: e.profiles,
		Registerer: e.reg, Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	e.svc = svc
	e.mux = http.NewServeMux()
	for _, r := range svc.Routes() {
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

// do sends a request from the client address ip.
func (e *env) do(method, path, body, ip string) resp {
	e.t.Helper()
	req := httptest.NewRequest(method, path, bytes.NewBufferString(body))
	req.Header.Set("Content-Type", "application/json")
	req.RemoteAddr = ip + ":40000"
	rec := httptest.NewRecorder()
	e.mux.ServeHTTP(rec, req)
	return resp{Code: rec.Code, Header: rec.Header(), Body: rec.Body.Bytes()}
}

func (e *env) post(path string, v any) resp {
	e.t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		e.t.Fatal(err)
	}
	return e.do(http.MethodPost, path, string(b), "192.0.2.1")
}

func (e *env) register(user, pw string) {
	e.t.Helper()
	r := e.post("/auth/register", map[string]string{"username": user, "password": pw})
	if r.Code != http.StatusCreated {
		e.t.Fatalf("register %s: %d %s", user, r.Code, r.Body)
	}
}

func (e *env) login(user, pw string) Tokens {
	e.t.Helper()
	r := e.post("/auth/login", map[string]string{"username": user, "password": pw})
	if r.Code != http.StatusOK {
		e.t.Fatalf("login %s: %d %s", user, r.Code, r.Body)
	}
	var tk Tokens
	if err := json.Unmarshal(r.Body, &tk); err != nil {
		e.t.Fatal(err)
	}
	return tk
}

func httpRequest(method, path, body, contentType string) *http.Request {
	req := httptest.NewRequest(method, path, bytes.NewBufferString(body))
	req.Header.Set("Content-Type", contentType)
	return req
}

func serve(e *env, req *http.Request) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	e.mux.ServeHTTP(rec, req)
	return rec
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// checkFor polls fn every interval until it returns nil or total elapses.
func checkFor(t *testing.T, total, every time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(total)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met after %v: %v", total, err)
		}
		time.Sleep(every)
	}
}
