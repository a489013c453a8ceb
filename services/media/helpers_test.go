package media

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/cluster/fsm/fsmtest"
	"github.com/edgechat/edgechat/internal/httpapi"
	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/internal/wire"
	"github.com/edgechat/edgechat/services/media/store"
)

// memStore is an in-memory store.Store for the service's unit tests
// (the real stores have their own tests, and the node tests run the
// service over them). It records the largest body it had to hold.
type memStore struct {
	mu      sync.Mutex
	objects map[string][]byte
	types   map[string]string
}

func newMemStore() *memStore {
	return &memStore{objects: map[string][]byte{}, types: map[string]string{}}
}

func (m *memStore) key(t store.Tier, k string) string { return string(t) + "/" + k }

func (m *memStore) Put(_ context.Context, t store.Tier, key string, r io.Reader, _ int64, ctype string) (store.Object, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return store.Object{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.objects[m.key(t, key)] = b
	m.types[m.key(t, key)] = ctype
	return store.Object{Key: key, Size: int64(len(b)), ContentType: ctype, ETag: fmt.Sprintf("e%d", len(b)), ModTime: time.Unix(0, 0)}, nil
}

func (m *memStore) Get(_ context.Context, t store.Tier, key string, off, n int64) (io.ReadCloser, store.Object, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.objects[m.key(t, key)]
	if !ok {
		return nil, store.Object{}, store.ErrNotFound
	}
	end := int64(len(b))
	if off < 0 || off > end || off == end && end > 0 {
		return nil, store.Object{}, store.ErrInvalidRange // as the real stores
	}
	if n >= 0 && off+n < end {
		end = off + n
	}
	return io.NopCloser(bytes.NewReader(b[off:end])), store.Object{Key: key, Size: int64(len(b))}, nil
}

func (m *memStore) Stat(_ context.Context, t store.Tier, key string) (store.Object, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.objects[m.key(t, key)]
	if !ok {
		return store.Object{}, store.ErrNotFound
	}
	return store.Object{Key: key, Size: int64(len(b)), ContentType: m.types[m.key(t, key)], ModTime: time.Unix(0, 0)}, nil
}

func (m *memStore) Delete(_ context.Context, t store.Tier, key string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.objects, m.key(t, key))
	return nil
}

func (m *memStore) Move(_ context.Context, from, to store.Tier, key string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.objects[m.key(from, key)]
	if !ok {
		return store.ErrNotFound
	}
	m.objects[m.key(to, key)] = b
	delete(m.objects, m.key(from, key))
	return nil
}

func (m *memStore) List(_ context.Context, t store.Tier, prefix string, fn func(store.Object) bool) error {
	m.mu.Lock()
	var keys []string
	for k := range m.objects {
		if strings.HasPrefix(k, string(t)+"/"+prefix) {
			keys = append(keys, k)
		}
	}
	m.mu.Unlock()
	sort.Strings(keys)
	for _, k := range keys {
		if !fn(store.Object{Key: strings.TrimPrefix(k, string(t)+"/")}) {
			break
		}
	}
	return nil
}

func (m *memStore) Close() error { return nil }

func (m *memStore) has(t store.Tier, key string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.objects[m.key(t, key)]
	return ok
}

// scriptedProc "processes" by copying the upload; a body starting with
// "REJECT:" is refused with the reason after it, "FAIL" fails.
type scriptedProc struct {
	mu    sync.Mutex
	calls int
	block chan struct{}
}

type refusal struct{ reason string }

func (r refusal) Error() string { return "refused: " + r.reason }

func (p *scriptedProc) Process(ctx context.Context, path, name, ctype string) (Processed, error) {
	p.mu.Lock()
	p.calls++
	block := p.block
	p.mu.Unlock()
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			return Processed{}, ctx.Err()
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return Processed{}, err
	}
	if r, ok := strings.CutPrefix(string(b), "REJECT:"); ok {
		return Processed{}, refusal{r}
	}
	if string(b) == "FAIL" {
		return Processed{}, fmt.Errorf("disk on fire")
	}
	out := filepath.Join(filepath.Dir(path), filepath.Base(path)+".out")
	if err := os.WriteFile(out, bytes.ToUpper(b), 0o600); err != nil {
		return Processed{}, err
	}
	return Processed{Kind: "file", MIME: "text/plain", Ext: "txt", Output: out, OutputMIME: "text/plain"}, nil
}

func (p *scriptedProc) Reason(err error) string {
	if r, ok := err.(refusal); ok {
		return r.reason
	}
	return ""
}

type fakePub struct {
	mu  sync.Mutex
	out []wire.Outbound
}

func (p *fakePub) Publish(o wire.Outbound) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.out = append(p.out, o)
	return nil
}

func (p *fakePub) events() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for _, o := range p.out {
		out = append(out, o.Topic+" "+string(o.Payload))
	}
	return out
}

type fakeGroups map[string][]string

func (g fakeGroups) IsMember(gid, uid string) bool {
	for _, m := range g[gid] {
		if m == uid {
			return true
		}
	}
	return false
}

type env struct {
	t     *testing.T
	prop  *fsmtest.Harness
	st    *memStore
	proc  *scriptedProc
	pub   *fakePub
	clock *testutil.FakeClock
	svc   *Service
	mux   *http.ServeMux
}

func newEnv(t *testing.T, cfg Config) *env {
	t.Helper()
	e := &env{t: t, prop: fsmtest.New(t), st: newMemStore(), proc: &scriptedProc{}, pub: &fakePub{},
		clock: testutil.NewFakeClock(time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC))}
	e.svc = e.newService(cfg, e.prop.DB, e.prop.FSM)
	t.Cleanup(e.svc.Wait) // before the harness closes the database
	e.mux = http.NewServeMux()
	for _, r := range e.svc.Routes() {
		e.mux.HandleFunc(r.Method+" "+r.Pattern, r.Handler)
	}
	return e
}

func (e *env) newService(cfg Config, db *badger.DB, f *fsm.FSM) *Service {
	e.t.Helper()
	if cfg.Node == "" {
		cfg.Node = "n1"
	}
	cfg.TempDir = e.t.TempDir()
	s, err := New(cfg, Deps{DB: db, Proposer: e.prop, FSM: f, Store: e.st, Processor: e.proc, Publisher: e.pub,
		Groups: fakeGroups{"team": {"alice", "carol"}}, Logger: testutil.QuietLogger(), Now: e.clock.Now})
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}

// upload stores body for owner through the service.
func (e *env) upload(owner, name, body string) Record {
	e.t.Helper()
	r, err := e.svc.Store(context.Background(), owner, Upload{Name: name, ClaimedType: "text/plain",
		Size: int64(len(body)), Body: strings.NewReader(body)})
	if err != nil {
		e.t.Fatalf("upload: %v", err)
	}
	return r
}

func (e *env) do(method, path, user string, body io.Reader, hdr map[string]string) *httptest.ResponseRecorder {
	e.t.Helper()
	req := httptest.NewRequest(method, path, body)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	if user != "" {
		req = req.WithContext(httpapi.WithPrincipal(req.Context(), wire.Principal{UserID: user}))
	}
	rec := httptest.NewRecorder()
	e.mux.ServeHTTP(rec, req)
	return rec
}
