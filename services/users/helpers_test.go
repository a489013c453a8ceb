package users

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgechat/edgechat/broker/cluster/fsm"
	"github.com/edgechat/edgechat/internal/httpapi"
	"github.com/edgechat/edgechat/internal/wire"
)

// testProposer applies each command synchronously through a real FSM, as
// a single-node Raft log would.
type testProposer struct {
	f       *fsm.FSM
	down    atomic.Bool // true: refuse like a cluster without quorum
	noValue atomic.Bool // true: drop handler values, like a forwarded proposal
	// before, when set, runs once just before the next command is applied
	// (after the HTTP handler's own checks): a concurrent change landing
	// first.
	before atomic.Pointer[func()]

	mu        sync.Mutex
	next      uint64
	followers []*fsm.FSM // other nodes applying the same log
}

var _ Proposer = (*testProposer)(nil)

func (p *testProposer) Propose(ctx context.Context, t byte, payload []byte) (any, error) {
	if p.down.Load() {
		return nil, fmt.Errorf("test proposer: %w", wire.ErrUnavailable)
	}
	if fn := p.before.Swap(nil); fn != nil {
		(*fn)()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.next++
	entry := &raft.Log{Index: p.next, Type: raft.LogCommand,
		Data: fsm.EncodeBatch([]fsm.Command{{Type: t, Payload: payload}})}
	rs := p.f.Apply(entry).([]fsm.Result)
	for _, f := range p.followers {
		f.Apply(entry)
	}
	if p.noValue.Load() {
		return nil, rs[0].Err
	}
	return rs[0].Value, rs[0].Err
}

// applyBatch applies several commands as one log entry.
func (p *testProposer) applyBatch(cmds []fsm.Command) []fsm.Result {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.next++
	return p.f.Apply(&raft.Log{Index: p.next, Type: raft.LogCommand, Data: fsm.EncodeBatch(cmds)}).([]fsm.Result)
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

// checkFor polls fn every `every` until it returns nil or total passes.
func checkFor(t *testing.T, total, every time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(total)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", total, err)
		}
		time.Sleep(every)
	}
}

type env struct {
	t     testing.TB
	svc   *Service
	db    *badger.DB
	prop  *testProposer
	clock *fakeClock
	mux   *http.ServeMux
	pub   *fakePublisher
	reg   *prometheus.Registry
}

func newEnv(t testing.TB) *env { return newEnvWith(t, nil) }

// newEnvWith lets a test adjust the service's deps.
func newEnvWith(t testing.TB, adjust func(*Deps)) *env {
	t.Helper()
	db, err := badger.Open(badger.DefaultOptions(t.TempDir()).WithLogger(nil).
		WithMemTableSize(8 << 20).WithValueThreshold(1 << 10).WithValueLogFileSize(8 << 20))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	e := &env{t: t, db: db, prop: &testProposer{f: fsm.New(db, nil)},
		clock: &fakeClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)},
		pub:   &fakePublisher{}, reg: prometheus.NewRegistry()}
	deps := Deps{DB: db, Proposer: e.prop, FSM: e.prop.f, Now: e.clock.Now, Publisher: e.pub, Registerer: e.reg}
	if adjust != nil {
		adjust(&deps)
	}
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
	m := map[string]string{}
	err := e.db.View(func(tx *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = []byte("r/user/")
		it := tx.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			m[string(it.Item().Key())] = string(v)
		}
		return nil
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return m
}

func (r resp) decode(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("body %q: %v", r.Body, err)
	}
}

// cacheCount reads edgechat_cache_requests_total{cache,result}.
func (e *env) cacheCount(cache, result string) float64 {
	e.t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		e.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "edgechat_cache_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["cache"] == cache && labels["result"] == result {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// follower starts a second node's users service that applies the same
// log as e (through e's proposer) into its own database.
func (e *env) follower() *Service {
	e.t.Helper()
	db, err := badger.Open(badger.DefaultOptions(e.t.TempDir()).WithLogger(nil).
		WithMemTableSize(8 << 20).WithValueThreshold(1 << 10).WithValueLogFileSize(8 << 20))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { db.Close() })
	f := fsm.New(db, nil)
	svc, err := New(Deps{DB: db, Proposer: e.prop, FSM: f, Now: e.clock.Now})
	if err != nil {
		e.t.Fatal(err)
	}
	e.prop.mu.Lock()
	e.prop.followers = append(e.prop.followers, f)
	e.prop.mu.Unlock()
	return svc
}
