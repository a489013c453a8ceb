package edgechat

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
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

// A refresh moves to the next node only when it never reached the first
// (connection refused); after a lost answer or a 503 the first node may
// have rotated the token, so it is not presented anywhere else.
func TestRefreshMovesOnOnlyWhenTheRequestNeverLeft(t *testing.T) {
	var nextCalls atomic.Int32
	next := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		nextCalls.Add(1)
		_, _ = fmt.Fprintf(w, `{"accessToken":%q,"refreshToken":"r2","expiresIn":900}`, fakeJWT("bob"))
	}))
	defer next.Close()
	lost := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Rotated, then the answer is lost with the connection.
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			_ = conn.Close()
		}
	}))
	defer lost.Close()
	busy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte(`{"error":{"code":"unavailable","message":"cannot commit now; retry"}}`))
	}))
	defer busy.Close()

	ctx := context.Background()
	if _, err := RefreshingTokenSourceURLs([]string{lost.URL, next.URL}, Tokens{RefreshToken: "r1"}, nil)(ctx); err == nil || nextCalls.Load() != 0 {
		t.Fatalf("lost answer: err %v, next node asked %d times; want an error and 0", err, nextCalls.Load())
	}
	var ae *APIError
	if _, err := RefreshingTokenSourceURLs([]string{busy.URL, next.URL}, Tokens{RefreshToken: "r1"}, nil)(ctx); !errors.As(err, &ae) || ae.Status != 503 || nextCalls.Load() != 0 {
		t.Fatalf("503: err %v, next node asked %d times; want the 503 and 0", err, nextCalls.Load())
	}
	ts := RefreshingTokenSourceURLs([]string{deadURL(t), next.URL}, Tokens{RefreshToken: "r1"}, nil)
	if tok, err := ts(ctx); err != nil || tok == "" || nextCalls.Load() != 1 {
		t.Fatalf("dead first node: %q, %v, next node asked %d times; want a token from it", tok, err, nextCalls.Load())
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
