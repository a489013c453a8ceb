package users

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

	mu   sync.Mutex
	next uint64
}

func (p *testProposer) Propose(ctx context.Context, t byte, payload []byte) (any, error) {
	if p.down.Load() {
		return nil, fmt.Errorf("test proposer: %w", wire.ErrUnavailable)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.next++
	res := p.f.Apply(&raft.Log{Index: p.next, Type: raft.LogCommand,
		Data: fsm.EncodeBatch([]fsm.Command{{Type: t, Payload: payload}})})
	rs := res.([]fsm.Result)
	if p.noValue.Load() {
		return nil, rs[0].Err
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

type env struct {
	t     *testing.T
	svc   *Service
	db    *badger.DB
	prop  *testProposer
	clock *fakeClock
	mux   *http.ServeMux
}

func newEnv(t *testing.T) *env {
	t.Helper()
	db, err := badger.Open(badger.DefaultOptions(t.TempDir()).WithLogger(nil).
		WithMemTableSize(8 << 20).WithValueThreshold(1 << 10).WithValueLogFileSize(8 << 20))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	e := &env{t: t, db: db, prop: &testProposer{f: fsm.New(db, nil)},
		clock: &fakeClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}}
	e.svc, err = New(Deps{DB: db, Proposer: e.prop, FSM: e.prop.f, Now: e.clock.Now})
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
