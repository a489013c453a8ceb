package testutil

import (
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync/atomic"
	"testing"
)

// LostAnswerProxy starts an HTTP proxy to target (a base URL) that
// forwards every request (WebSocket upgrades too). Once loseNext is
// called it loses the answer to the next request for path: the target
// acts on it, and the client's connection closes with no answer, as when
// a network drops it. lost tells whether that has happened.
func LostAnswerProxy(t testing.TB, target, path string) (proxyURL string, loseNext func(), lost func() bool) {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	var armed, done atomic.Bool
	rp := httputil.NewSingleHostReverseProxy(u)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != path || !armed.CompareAndSwap(true, false) {
			rp.ServeHTTP(w, r)
			return
		}
		req := r.Clone(r.Context())
		req.RequestURI, req.Host = "", u.Host
		req.URL.Scheme, req.URL.Host = u.Scheme, u.Host
		if resp, err := http.DefaultTransport.RoundTrip(req); err == nil {
			resp.Body.Close() // the target acted on it
		}
		if conn, _, err := w.(http.Hijacker).Hijack(); err == nil {
			conn.Close() // and its answer is lost
		}
		done.Store(true)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, func() { armed.Store(true) }, done.Load
}
