package edgechat

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/testutil"
)

// deadURL is the address of an HTTP server that is gone: connections to
// it are refused.
func deadURL(t *testing.T) string {
	srv := httptest.NewServer(http.NotFoundHandler())
	srv.Close()
	return srv.URL
}

// "Without a load balancer" (docs/operations.md) an app lists the nodes:
// tcp:// broker URLs in Options.URLs, their APIs in HTTPURLs, and
// RefreshingTokenSourceURLs over the same. When the first node dies, the
// catch-up sync and the token refresh move to the next node's API with
// the MQTT connection, and no refresh token is presented twice.
func TestNodeLossWithTCPURLsMovesSyncAndRefreshToTheNextNode(t *testing.T) {
	a, b := newFakeServer(t), newFakeServer(t)
	auth := newRotatingAuth("r1")
	cluster := http.NewServeMux() // every node's API serves the cluster's state
	cluster.Handle("/auth/refresh", auth)
	cluster.Handle("/chat/sync", syncOver(b, "bob", nil))
	apiA, apiB := httptest.NewServer(cluster), httptest.NewServer(cluster)
	defer apiB.Close()
	apiAlive := true
	defer func() {
		if apiAlive {
			apiA.Close()
		}
	}()
	clock := testutil.NewFakeClock(time.Now())
	r := &refresher{urls: []string{apiA.URL, apiB.URL}, cur: Tokens{RefreshToken: "r1"}, now: clock.Now}
	br := newRecorder()
	var connected atomic.Bool
	bob := dialFake(t, a, "bob", br, func(o *Options) {
		o.URLs = []string{a.tcpURL, b.tcpURL}
		o.HTTPURL, o.HTTPURLs = "", []string{apiA.URL, apiB.URL}
		o.Token, o.TokenSource = "", r.token
		o.OnConnectionChange = func(up bool) { connected.Store(up) }
	})
	if got := bob.HTTPURL(); got != apiA.URL {
		t.Fatalf("API in use %s, want the first node's %s", got, apiA.URL)
	}
	// Node A dies (its broker refuses connections, its API is gone) and
	// the access token is due: the reconnection needs a refresh.
	a.set(func(f *fakeServer) { f.paused = true })
	apiA.Close()
	apiAlive = false
	clock.Advance(time.Hour)
	a.cutAll()
	missed := b.store("carol", "bob", "sent while bob failed over") // the cluster has it; B serves sync
	testutil.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		if !connected.Load() {
			return fmt.Errorf("bob has not failed over to B")
		}
		if n := br.count(missed.ID); n != 1 {
			return fmt.Errorf("message committed during the failover delivered %d times (API in use %s)", n, bob.HTTPURL())
		}
		return nil
	})
	if bob.HTTPURL() != apiB.URL {
		t.Fatalf("API in use %s, want B's %s", bob.HTTPURL(), apiB.URL)
	}
	if auth.isRevoked() {
		t.Fatal("a refresh token was presented twice: the session was revoked")
	}
}

// A refresh moves to the next node when the first cannot answer (no
// connection, a lost answer, 502, 503, 504) with the same
// Idempotency-Key, which the cluster answers as the retry it is (the
// first node may have rotated the token: e2e's
// TestRefreshMovesOnFromTheGatewayOfADeadNode); a refusal (401) is not
// presented anywhere else.
func TestRefreshMovesOnWithItsKey(t *testing.T) {
	var keys []string
	var mu sync.Mutex
	next := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		keys = append(keys, r.Header.Get("Idempotency-Key"))
		mu.Unlock()
		_, _ = fmt.Fprintf(w, `{"accessToken":%q,"refreshToken":"r2","expiresIn":900}`, fakeJWT("bob"))
	}))
	defer next.Close()
	asked := func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(keys)
	}
	var firstKey atomic.Value
	first := func(answer func(w http.ResponseWriter)) *httptest.Server {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			firstKey.Store(r.Header.Get("Idempotency-Key"))
			answer(w)
		}))
		t.Cleanup(srv.Close)
		return srv
	}
	status := func(code int) func(w http.ResponseWriter) {
		return func(w http.ResponseWriter) { w.WriteHeader(code) }
	}
	ctx := context.Background()
	for name, srv := range map[string]*httptest.Server{
		"lost answer": first(func(w http.ResponseWriter) {
			if conn, _, err := w.(http.Hijacker).Hijack(); err == nil {
				_ = conn.Close() // rotated, then the answer is lost with the connection
			}
		}),
		"502": first(status(http.StatusBadGateway)),
		"503": first(status(http.StatusServiceUnavailable)),
		"504": first(status(http.StatusGatewayTimeout)),
	} {
		before := len(asked())
		tok, err := RefreshingTokenSourceURLs([]string{srv.URL, next.URL}, Tokens{RefreshToken: "r1"}, nil)(ctx)
		got := asked()
		if err != nil || tok == "" || len(got) != before+1 {
			t.Fatalf("%s: %q, %v, next node asked %d times; want a token from it", name, tok, err, len(got)-before)
		}
		if k, _ := firstKey.Load().(string); k == "" || got[len(got)-1] != k {
			t.Fatalf("%s: the next node got Idempotency-Key %q, the first %q; want the same", name, got[len(got)-1], k)
		}
	}
	refused := first(func(w http.ResponseWriter) {
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`{"error":{"code":"invalid_refresh_token","message":"no"}}`))
	})
	before := len(asked())
	if _, err := RefreshingTokenSourceURLs([]string{refused.URL, next.URL}, Tokens{RefreshToken: "r1"}, nil)(ctx); !errors.Is(err, ErrUnauthorized) || len(asked()) != before {
		t.Fatalf("401: %v, next node asked %d times; want the refusal and 0", err, len(asked())-before)
	}
	ts := RefreshingTokenSourceURLs([]string{deadURL(t), next.URL}, Tokens{RefreshToken: "r1"}, nil)
	if tok, err := ts(ctx); err != nil || tok == "" || len(asked()) != before+1 {
		t.Fatalf("dead first node: %q, %v; want a token from the next", tok, err)
	}
}

// The same rule for the client's other calls: a DELETE moves on from a
// node it cannot reach, never after a lost answer; a read moves on in
// both cases.
func TestAPICallsMoveOnOnlyWhenTheRequestNeverLeft(t *testing.T) {
	var liveCalls atomic.Int32
	live := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		liveCalls.Add(1)
		if r.Method == http.MethodGet {
			_, _ = w.Write([]byte(`{"sessions":[]}`))
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer live.Close()
	lost := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if conn, _, err := w.(http.Hijacker).Hijack(); err == nil {
			_ = conn.Close()
		}
	}))
	defer lost.Close()
	ctx := context.Background()
	client := func(urls ...string) *Client {
		return &Client{opts: Options{Token: "t"}, hc: http.DefaultClient, httpURLs: urls}
	}

	if err := client(deadURL(t), live.URL).EndSession(ctx, "s1"); err != nil || liveCalls.Load() != 1 {
		t.Fatalf("dead first node: %v, live node asked %d times; want 1", err, liveCalls.Load())
	}
	if err := client(lost.URL, live.URL).EndSession(ctx, "s1"); err == nil || liveCalls.Load() != 1 {
		t.Fatalf("lost answer: %v, live node asked %d times; want an error and no new call", err, liveCalls.Load())
	}
	if _, err := client(lost.URL, live.URL).Sessions(ctx); err != nil || liveCalls.Load() != 2 {
		t.Fatalf("a read after a lost answer: %v, live node asked %d times; want it answered there", err, liveCalls.Load())
	}
}

// A read gives up on a node that makes no progress for readAttemptTimeout
// and moves on; one whose answer keeps coming, however slowly, is not cut.
func TestAReadLeavesASilentNodeNotASlowOne(t *testing.T) {
	defer func(d time.Duration) { readAttemptTimeout = d }(readAttemptTimeout)
	readAttemptTimeout = 300 * time.Millisecond
	release := make(chan struct{})
	defer close(release)
	silent := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select { // reads the request, never answers
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer silent.Close()
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, `{"sessions":[`)
		for range 8 { // 8 × 100 ms, well past the limit in all
			w.(http.Flusher).Flush()
			time.Sleep(100 * time.Millisecond)
			_, _ = io.WriteString(w, " ")
		}
		_, _ = io.WriteString(w, `{"id":"s1"}]}`)
	}))
	defer slow.Close()
	client := func(urls ...string) *Client {
		return &Client{opts: Options{Token: "t"}, hc: http.DefaultClient, httpURLs: urls}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	got, err := client(silent.URL, slow.URL).Sessions(ctx)
	if err != nil || len(got) != 1 || got[0].ID != "s1" {
		t.Fatalf("a silent node, then a slow one: %+v, %v; want the slow one's answer", got, err)
	}
	if d := time.Since(start); d < 800*time.Millisecond {
		t.Fatalf("answered after %v: the slow answer was not read to its end", d)
	}
}
