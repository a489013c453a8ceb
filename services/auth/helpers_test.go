package auth

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/cluster/fsm/fsmtest"
	"github.com/edgechat/edgechat/internal/testutil"
)

var _ Proposer = (*fsmtest.Harness)(nil)

type fakeProfiles struct {
	mu    sync.Mutex
	names map[string]string
	err   error
	calls int // CreateProfile calls
}

func (f *fakeProfiles) CreateProfile(_ context.Context, uid, displayName string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
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
	t        testing.TB
	svc      *Service
	db       *badger.DB
	prop     *fsmtest.Harness
	clock    *testutil.FakeClock
	profiles *fakeProfiles
	keyDir   string
	mux      *http.ServeMux
	reg      *prometheus.Registry
}

var tinyArgon = Argon2Params{MemoryKiB: 64, Time: 1, Threads: 1}

func newEnv(t testing.TB, mutate ...func(*Config)) *env {
	t.Helper()
	cfg := Config{KeyDir: t.TempDir() + "/keys", Argon2: tinyArgon}
	for _, m := range mutate {
		m(&cfg)
	}
	return newEnvWith(t, cfg)
}

// newEnvWith builds a service on a fresh database with cfg as it is.
func newEnvWith(t testing.TB, cfg Config) *env {
	t.Helper()
	return newEnvWithBarrier(t, cfg, nil)
}

// newEnvWithBarrier is newEnvWith with barrier as Deps.ReadBarrier.
func newEnvWithBarrier(t testing.TB, cfg Config, barrier func(context.Context) error) *env {
	t.Helper()
	prop := fsmtest.New(t)
	e := &env{
		t: t, db: prop.DB,
		prop:     prop,
		clock:    testutil.NewFakeClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)),
		profiles: &fakeProfiles{names: map[string]string{}},
		keyDir:   cfg.KeyDir,
		reg:      prometheus.NewRegistry(),
	}
	svc, err := New(cfg, Deps{DB: e.db, Proposer: e.prop, FSM: e.prop.FSM, Profiles: e.profiles,
		Registerer: e.reg, Now: e.clock.Now, ReadBarrier: barrier})
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

// browser serves e's handlers over real HTTP until the test ends and
// returns the server and a client with a cookie jar, as a browser.
func (e *env) browser(t *testing.T) (*httptest.Server, *cookiejar.Jar, *http.Client) {
	t.Helper()
	srv := httptest.NewServer(e.mux)
	t.Cleanup(srv.Close)
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return srv, jar, &http.Client{Jar: jar}
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

// follower starts a follower FSM of e's harness with an auth service on
// it (its own signing key): another node applying the same log.
func (e *env) follower() (*fsm.FSM, *Service) {
	e.t.Helper()
	f := e.prop.NewFollower(e.t)
	svc, err := New(Config{KeyDir: e.t.TempDir() + "/keys", Argon2: tinyArgon},
		Deps{DB: f.DB(), Proposer: e.prop, FSM: f, Now: e.clock.Now})
	if err != nil {
		e.t.Fatal(err)
	}
	return f, svc
}

// restartedOn is an auth service started on db with the keys in keyDir
// (a node restarted on that database), registered on a fresh follower
// FSM of e's harness.
func (e *env) restartedOn(db *badger.DB, keyDir string) *Service {
	e.t.Helper()
	svc, err := New(Config{KeyDir: keyDir, Argon2: tinyArgon},
		Deps{DB: db, Proposer: e.prop, FSM: e.prop.NewFollower(e.t), Now: e.clock.Now})
	if err != nil {
		e.t.Fatal(err)
	}
	return svc
}

// HasProfile makes fakeProfiles a profileChecker.
func (f *fakeProfiles) HasProfile(uid string) bool {
	_, ok := f.get(uid)
	return ok
}
