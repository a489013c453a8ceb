package archive

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"

	"github.com/dgraph-io/badger/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/cluster/fsm/fsmtest"
	"github.com/edgechat/edgechat/internal/httpapi"
	"github.com/edgechat/edgechat/internal/snowflake"
	"github.com/edgechat/edgechat/internal/wire"
)

// seqIDs hands out IDs from start, stepping by step (negative to hand
// them out in decreasing order, as a node with a clock far ahead
// followed by one behind would).
type seqIDs struct {
	mu   sync.Mutex
	next int64
	step int64
	n    int
}

func (s *seqIDs) Next() snowflake.ID {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := s.next
	s.next += s.step
	s.n++
	return snowflake.ID(id)
}

func (s *seqIDs) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}

type fakePub struct {
	mu  sync.Mutex
	out []wire.Outbound
	err error
}

func (p *fakePub) Publish(o wire.Outbound) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.out = append(p.out, o)
	return p.err
}

// DeliverCommitted records a live delivery (LiveDelivery) among the
// publishes; its Scope tells them apart (withLive).
func (p *fakePub) DeliverCommitted(o wire.Outbound) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.out = append(p.out, o)
}

func (p *fakePub) published() []wire.Outbound {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]wire.Outbound(nil), p.out...)
}

type fakeDir map[string]bool

func (d fakeDir) UserExists(uid string) (bool, error) { return d[uid], nil }

// fakeGroups is an in-memory membership table.
type fakeGroups struct {
	mu      sync.Mutex
	members map[string]map[string]bool // gid → uid set
}

func (g *fakeGroups) IsMember(gid, uid string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.members[gid][uid]
}

func (g *fakeGroups) GroupsOf(uid string) ([]string, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []string
	for gid, m := range g.members {
		if m[uid] {
			out = append(out, gid)
		}
	}
	slices.Sort(out)
	return out, nil
}

func (g *fakeGroups) add(gid string, uids ...string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.members == nil {
		g.members = map[string]map[string]bool{}
	}
	if g.members[gid] == nil {
		g.members[gid] = map[string]bool{}
	}
	for _, u := range uids {
		g.members[gid][u] = true
	}
}

func (g *fakeGroups) remove(gid, uid string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.members[gid], uid)
}

// fakeBlocks holds blocker→blocked pairs.
type fakeBlocks struct {
	mu  sync.Mutex
	set map[[2]string]bool
}

func (b *fakeBlocks) IsBlocked(blocker, blocked string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.set[[2]string{blocker, blocked}]
}

func (b *fakeBlocks) block(blocker, blocked string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.set == nil {
		b.set = map[[2]string]bool{}
	}
	b.set[[2]string{blocker, blocked}] = true
}

func (b *fakeBlocks) unblock(blocker, blocked string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.set, [2]string{blocker, blocked})
}

type env struct {
	svc    *Service
	db     *badger.DB
	f      *fsm.FSM
	prop   *fsmtest.Harness
	batch  int   // see fsmtest.WithBatch
	memTab int64 // see fsmtest.WithMemTableSize
	bopts  func(badger.Options) badger.Options
	pub    *fakePub
	ids    *seqIDs
	reg    *prometheus.Registry
	groups *fakeGroups // nil: the service runs without groups
	blocks *fakeBlocks
	gdep   Groups // overrides groups as the Groups dependency
	outbox Outbox
	rgns   Regions
	segs   SegmentStore
	fetch  func(ctx context.Context, key string) (io.ReadCloser, error)
	// betweenSteps, if set, runs between the steps of an erasure (erase_test.go).
	betweenSteps func(step int)
	// wrapProp, if set, stands between the service and the harness.
	wrapProp func(Proposer) Proposer
	users    Directory                       // nil: alice, bob, carol and dave exist
	media    Media                           // Deps.Media
	barrier  func(ctx context.Context) error // Deps.ReadBarrier
	live     bool                            // Deps.Live is pub (withLive)
}

type envOpt func(*env)

func withBatch(n int) envOpt      { return func(e *env) { e.batch = n } }
func withMemTable(n int64) envOpt { return func(e *env) { e.memTab = n } }
func withIDs(ids *seqIDs) envOpt  { return func(e *env) { e.ids = ids } }

// withBadger opens the database with fn's options (fsmtest.WithBadgerOptions).
func withBadger(fn func(badger.Options) badger.Options) envOpt {
	return func(e *env) { e.bopts = fn }
}

// withGroups gives the service a Groups (and Blocks) dependency.
func withGroups() envOpt {
	return func(e *env) { e.groups, e.blocks = &fakeGroups{}, &fakeBlocks{} }
}

// withGroupsDep gives the service g as its Groups dependency.
func withGroupsDep(g Groups) envOpt { return func(e *env) { e.gdep = g } }

// withSegments gives the service a segment store.
func withSegments(st SegmentStore) envOpt { return func(e *env) { e.segs = st } }

// withRegions gives the service its region and links.
func withRegions(r Regions) envOpt { return func(e *env) { e.rgns = r } }

// withUsers gives the service u as its directory of users.
func withUsers(u Directory) envOpt { return func(e *env) { e.users = u } }

// withMedia gives the service m as its media service.
func withMedia(m Media) envOpt { return func(e *env) { e.media = m } }

// withReadBarrier gives the service fn as its read barrier.
func withReadBarrier(fn func(ctx context.Context) error) envOpt {
	return func(e *env) { e.barrier = fn }
}

// withLive makes the service deliver what it stores live (Deps.Live),
// recorded by the fake publisher.
func withLive() envOpt { return func(e *env) { e.live = true } }

// withOutbox gives the service an Outbox.
func withOutbox(o Outbox) envOpt { return func(e *env) { e.outbox = o } }

func newEnv(t testing.TB, opts ...envOpt) *env {
	t.Helper()
	e := &env{
		pub: &fakePub{},
		ids: &seqIDs{next: 1 << 30, step: 1},
		reg: prometheus.NewRegistry(),
	}
	for _, o := range opts {
		o(e)
	}
	fo := []fsmtest.Option{fsmtest.WithBatch(e.batch), fsmtest.WithMemTableSize(e.memTab)}
	if e.bopts != nil {
		fo = append(fo, fsmtest.WithBadgerOptions(e.bopts))
	}
	e.prop = fsmtest.New(t, fo...)
	e.db, e.f = e.prop.DB, e.prop.FSM
	deps := Deps{
		DB: e.db, Proposer: Proposer(e.prop), FSM: e.f, Publisher: e.pub, IDs: e.ids,
		Users:      fakeDir{"alice": true, "bob": true, "carol": true, "dave": true},
		Registerer: e.reg,
	}
	if e.groups != nil {
		deps.Groups, deps.Blocks = e.groups, e.blocks
	}
	if e.gdep != nil {
		deps.Groups = e.gdep
	}
	if e.wrapProp != nil {
		deps.Proposer = e.wrapProp(e.prop)
	}
	if e.users != nil {
		deps.Users = e.users
	}
	deps.ReadBarrier = e.barrier
	deps.Media = e.media
	deps.Outbox = e.outbox
	if e.live {
		deps.Live = e.pub
	}
	deps.Regions = e.rgns
	deps.Segments = e.segs
	deps.FetchSegment = e.fetch
	svc, err := New(deps)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	e.svc = svc
	return e
}

func text(cid, body string) wire.Envelope {
	return wire.Envelope{CID: cid, Type: wire.TypeText, Body: body}
}

func (e *env) send(t testing.TB, from, to, cid string) wire.Envelope {
	t.Helper()
	stored, _, dup, err := e.svc.SendDirect(context.Background(), from, to, text(cid, "hi "+cid))
	if err != nil || dup {
		t.Fatalf("SendDirect(%s→%s %s) = dup %v, %v", from, to, cid, dup, err)
	}
	return stored
}

func (e *env) sendGroup(t testing.TB, from, gid, cid string) wire.Envelope {
	t.Helper()
	stored, _, dup, err := e.svc.SendGroup(context.Background(), from, gid, text(cid, "hi "+cid))
	if err != nil || dup {
		t.Fatalf("SendGroup(%s→%s %s) = dup %v, %v", from, gid, cid, dup, err)
	}
	return stored
}

// dump returns every replicated key and value except the applied index,
// to prove that a refusal changed nothing.
func dump(t testing.TB, db *badger.DB) map[string]string {
	t.Helper()
	return fsmtest.Dump(t, db, "r/")
}

// server serves the archive's routes on 127.0.0.1 port 0. The principal
// comes from the X-Test-User header (the gateway's job in production).
func (e *env) server(t testing.TB) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	for _, r := range e.svc.Routes() {
		h := r.Handler
		mux.HandleFunc(r.Method+" "+r.Pattern, func(w http.ResponseWriter, req *http.Request) {
			if u := req.Header.Get("X-Test-User"); u != "" {
				req = req.WithContext(httpapi.WithPrincipal(req.Context(), httpapi.Principal{UserID: u}))
			}
			h(w, req)
		})
	}
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

type response struct {
	Status int
	Header http.Header
	Body   []byte
}

func (r response) code() string {
	var e struct {
		Error struct{ Code string } `json:"error"`
	}
	_ = json.Unmarshal(r.Body, &e)
	return e.Error.Code
}

func do(t testing.TB, srv *httptest.Server, user, method, path, ctype string, body []byte) response {
	t.Helper()
	req, err := http.NewRequest(method, srv.URL+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if user != "" {
		req.Header.Set("X-Test-User", user)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

func get(t testing.TB, srv *httptest.Server, user, path string, out any) response {
	t.Helper()
	r := do(t, srv, user, http.MethodGet, path, "", nil)
	if r.Status == http.StatusOK && out != nil {
		if err := json.Unmarshal(r.Body, out); err != nil {
			t.Fatalf("GET %s: %v in %s", path, err, r.Body)
		}
	}
	return r
}

type page struct {
	Messages []wire.Envelope `json:"messages"`
	HasMore  bool            `json:"hasMore"`
	Cursor   string          `json:"cursor"`
}

type convList struct {
	Conversations []struct {
		Peer        string        `json:"peer"`
		Group       string        `json:"group"`
		LastMessage wire.Envelope `json:"lastMessage"`
		Unread      int           `json:"unread"`
		PeerRead    string        `json:"peerRead"`
	} `json:"conversations"`
	HasMore bool `json:"hasMore"`
}

func postJSON(t testing.TB, srv *httptest.Server, user, body string) response {
	t.Helper()
	return do(t, srv, user, http.MethodPost, "/chat/messages", "application/json", []byte(body))
}

var (
	_ Proposer  = (*fsmtest.Harness)(nil)
	_ Publisher = (*fakePub)(nil)
	_ Directory = fakeDir(nil)
	_ IDSource  = (*seqIDs)(nil)
	_ Groups    = (*fakeGroups)(nil)
	_ Blocks    = (*fakeBlocks)(nil)
)
