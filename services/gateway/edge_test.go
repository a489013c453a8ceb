package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgechat/edgechat/internal/httpapi"
	"github.com/edgechat/edgechat/internal/testutil"
)

// newEnvClock is newEnv with the limiters on a fake clock.
func newEnvClock(t *testing.T, cfg Config) (*env, *testutil.FakeClock) {
	t.Helper()
	c := testutil.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	e := &env{reg: prometheus.NewRegistry(), logs: &lockedBuf{}}
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	g, err := New(cfg, Deps{
		Verifier:   testVerifier,
		Logger:     slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Registerer: e.reg,
		Gatherer:   e.reg,
		Now:        c.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = g.Close() })
	e.g = g
	return e, c
}

// from sends a request from the given peer address.
func (e *env) from(peer, method, path, auth string, body io.Reader, hdr ...string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, body)
	req.RemoteAddr = peer
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	w := httptest.NewRecorder()
	e.g.Handler().ServeHTTP(w, req)
	return w
}

func wantStatus(t *testing.T, w *httptest.ResponseRecorder, status int, code string) {
	t.Helper()
	if w.Code != status {
		t.Fatalf("status %d, want %d: %s", w.Code, status, w.Body)
	}
	if code != "" {
		if got := errorCode(t, w.Header().Get("Content-Type"), w.Body.Bytes()); got != code {
			t.Fatalf("code %q, want %q", got, code)
		}
	}
}

func want429(t *testing.T, w *httptest.ResponseRecorder, retryAfter string) {
	t.Helper()
	wantStatus(t, w, http.StatusTooManyRequests, httpapi.CodeRateLimited)
	if got := w.Header().Get("Retry-After"); got != retryAfter {
		t.Fatalf("Retry-After %q, want %q", got, retryAfter)
	}
}

func ok200(w http.ResponseWriter, r *http.Request) {
	httpapi.WriteJSON(w, http.StatusOK, map[string]string{"ip": ClientIP(r.Context()), "remote": r.RemoteAddr})
}

func TestAdminRoutes(t *testing.T) {
	e := newEnv(t, Config{})
	e.g.Mount(httpapi.Route{Method: "GET", Pattern: "/admin/stats", Handler: whoami, Admin: true})
	wantStatus(t, e.do("GET", "/admin/stats", "", nil), 401, httpapi.CodeUnauthorized)
	wantStatus(t, e.do("GET", "/admin/stats", "Bearer forged", nil), 401, httpapi.CodeUnauthorized)
	wantStatus(t, e.do("GET", "/admin/stats", "Bearer good-alice", nil), 403, httpapi.CodeForbidden)
	w := e.do("GET", "/admin/stats", "Bearer good-admin", nil)
	wantStatus(t, w, 200, "")
	if !strings.Contains(w.Body.String(), `"user":"root"`) {
		t.Fatalf("admin handler saw %s", w.Body)
	}
	// The refusal is logged with the user.
	var users []any
	for _, l := range e.logs.lines(t, "http request") {
		users = append(users, l["user"], l["status"])
	}
	if fmt.Sprint(users) != "[ 401  401 alice 403 root 200]" {
		t.Fatalf("access log users/statuses %v", users)
	}
	defer func() {
		if recover() == nil {
			t.Fatal("a public admin route was mounted")
		}
	}()
	e.g.Mount(httpapi.Route{Method: "GET", Pattern: "/admin/open", Handler: whoami, Admin: true, Public: true})
}

func TestPerIPLimit(t *testing.T) {
	e, clock := newEnvClock(t, Config{PerIP: RateSpec{Rate: 0.1, Burst: 2}})
	e.g.Mount(
		httpapi.Route{Method: "GET", Pattern: "/open", Handler: ok200, Public: true},
		httpapi.Route{Method: "GET", Pattern: "/closed", Handler: ok200},
	)
	const a, b = "192.0.2.1:1000", "192.0.2.2:1000"
	wantStatus(t, e.from(a, "GET", "/open", "", nil), 200, "")
	// Bad tokens count: the per-IP bucket comes before authentication.
	wantStatus(t, e.from(a, "GET", "/closed", "Bearer forged", nil), 401, "")
	want429(t, e.from(a, "GET", "/closed", "Bearer forged", nil), "10")
	want429(t, e.from(a, "GET", "/open", "", nil), "10")
	want429(t, e.from(a, "GET", "/nowhere", "", nil), "10") // even unmatched paths
	// Another address has its own bucket; another port is the same address.
	wantStatus(t, e.from(b, "GET", "/open", "", nil), 200, "")
	want429(t, e.from("192.0.2.1:2000", "GET", "/open", "", nil), "10")

	clock.Advance(9 * time.Second)
	want429(t, e.from(a, "GET", "/open", "", nil), "1") // 1s left, rounded up
	clock.Advance(time.Second)
	wantStatus(t, e.from(a, "GET", "/open", "", nil), 200, "")
	want429(t, e.from(a, "GET", "/open", "", nil), "10")

	if n, _ := testutil.MetricValue(t, e.reg, "edgechat_http_rate_limited_total", map[string]string{"class": "all", "scope": "ip"}); n != 6 {
		t.Fatalf("rate_limited{all,ip} = %v, want 6", n)
	}
}

func TestPerUserAndClassLimits(t *testing.T) {
	e, clock := newEnvClock(t, Config{RateLimits: map[string]RateSpec{
		httpapi.ClassRead:  {Rate: 1, Burst: 2},
		httpapi.ClassWrite: {Rate: 0.5, Burst: 1},
		httpapi.ClassAuth:  {Rate: 0.25, Burst: 1},
	}})
	var handled atomic.Int32
	count := func(w http.ResponseWriter, r *http.Request) { handled.Add(1); ok200(w, r) }
	e.g.Mount(
		httpapi.Route{Method: "GET", Pattern: "/thing", Handler: count}, // Class "" is read
		httpapi.Route{Method: "POST", Pattern: "/thing", Handler: count, Class: httpapi.ClassWrite},
		httpapi.Route{Method: "POST", Pattern: "/login", Handler: count, Class: httpapi.ClassAuth, Public: true},
		httpapi.Route{Method: "GET", Pattern: "/custom", Handler: count, Class: "nosuchclass"},
	)
	const ip = "192.0.2.1:1000"
	alice, root := "Bearer good-alice", "Bearer good-admin"
	get := func(auth string) *httptest.ResponseRecorder { return e.from(ip, "GET", "/thing", auth, nil) }
	post := func(auth string) *httptest.ResponseRecorder {
		return e.from(ip, "POST", "/thing", auth, strings.NewReader("{}"), "Content-Type", "application/json")
	}
	wantStatus(t, get(alice), 200, "")
	wantStatus(t, get(alice), 200, "")
	handled.Store(0)
	want429(t, get(alice), "1")
	if handled.Load() != 0 {
		t.Fatal("the handler ran for a refused request")
	}
	// Same IP, other user: own bucket. Write is its own class, with its own
	// (slower) limit.
	wantStatus(t, get(root), 200, "")
	wantStatus(t, post(alice), 200, "")
	want429(t, post(alice), "2")
	// An unknown class is limited as read (and warned about at Mount).
	want429(t, e.from(ip, "GET", "/custom", alice, nil), "1")
	if len(e.logs.lines(t, "gateway: route class has no rate limit; using read's")) != 1 {
		t.Fatal("no warning for the unknown class")
	}

	clock.Advance(time.Second)
	wantStatus(t, get(alice), 200, "")
	want429(t, post(alice), "1")
	clock.Advance(time.Second)
	wantStatus(t, post(alice), 200, "")

	// Public auth routes are limited per client IP.
	wantStatus(t, e.from(ip, "POST", "/login", "", strings.NewReader("{}"), "Content-Type", "application/json"), 200, "")
	want429(t, e.from(ip, "POST", "/login", "", strings.NewReader("{}"), "Content-Type", "application/json"), "4")
	wantStatus(t, e.from("192.0.2.9:1", "POST", "/login", "", strings.NewReader("{}"), "Content-Type", "application/json"), 200, "")

	for _, tc := range []struct {
		class, scope string
		want         float64
	}{{"read", "user", 2}, {"write", "user", 2}, {"auth", "ip", 1}} {
		if n, _ := testutil.MetricValue(t, e.reg, "edgechat_http_rate_limited_total", map[string]string{"class": tc.class, "scope": tc.scope}); n != tc.want {
			t.Errorf("rate_limited{%s,%s} = %v, want %v", tc.class, tc.scope, n, tc.want)
		}
	}
}

func TestNoRateLimits(t *testing.T) {
	e, _ := newEnvClock(t, Config{NoRateLimits: true, PerIP: RateSpec{Rate: 1, Burst: 1},
		RateLimits: map[string]RateSpec{"read": {Rate: 1, Burst: 1}}})
	e.g.Mount(httpapi.Route{Method: "GET", Pattern: "/thing", Handler: ok200})
	for range 50 {
		wantStatus(t, e.do("GET", "/thing", "Bearer good-alice", nil), 200, "")
	}
}

func TestClientIPAndTrustedProxies(t *testing.T) {
	e, _ := newEnvClock(t, Config{
		TrustedProxies: []string{"10.0.0.0/8", "2001:db8:ffff::1"},
		PerIP:          RateSpec{Rate: 0.001, Burst: 1},
	})
	e.g.Mount(httpapi.Route{Method: "GET", Pattern: "/ip", Handler: ok200, Public: true})
	ipOf := func(w *httptest.ResponseRecorder) string {
		t.Helper()
		wantStatus(t, w, 200, "")
		var v map[string]string
		_ = json.Unmarshal(w.Body.Bytes(), &v)
		return v["ip"]
	}
	xff := func(peer string, vals ...string) *httptest.ResponseRecorder {
		req := httptest.NewRequest("GET", "/ip", nil)
		req.RemoteAddr = peer
		for _, v := range vals {
			req.Header.Add("X-Forwarded-For", v)
		}
		w := httptest.NewRecorder()
		e.g.Handler().ServeHTTP(w, req)
		return w
	}
	for _, tc := range []struct {
		name, peer string
		xff        []string
		want       string
	}{
		{"trusted proxy: right-most untrusted hop", "10.1.1.1:5000", []string{"6.6.6.6, 203.0.113.7, 10.2.2.2"}, "203.0.113.7"},
		{"across several header lines", "10.1.1.1:5000", []string{"6.6.6.6", "203.0.113.8", "10.2.2.2"}, "203.0.113.8"},
		{"no header: the proxy itself", "10.1.1.2:5000", nil, "10.1.1.2"},
		{"every hop trusted: the left-most", "10.1.1.3:5000", []string{"10.3.3.3, 10.2.2.2"}, "10.3.3.3"},
		{"garbage stops the walk", "10.1.1.4:5000", []string{"203.0.113.9, nonsense, 10.4.4.4"}, "10.4.4.4"},
		{"IPv6 proxy, mapped IPv4 client", "[2001:db8:ffff::1]:443", []string{"::ffff:203.0.113.10"}, "203.0.113.10"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := xff(tc.peer, tc.xff...)
			if got := ipOf(w); got != tc.want {
				t.Fatalf("client IP %q, want %q", got, tc.want)
			}
			// Handlers see the client as RemoteAddr; the log keeps the peer.
			var v map[string]string
			_ = json.Unmarshal(w.Body.Bytes(), &v)
			wantRemote := tc.peer
			if tc.want != tc.peer[:strings.LastIndexByte(tc.peer, ':')] {
				wantRemote = net.JoinHostPort(tc.want, "0")
			}
			if v["remote"] != wantRemote {
				t.Fatalf("handler RemoteAddr %q, want %q", v["remote"], wantRemote)
			}
			lines := e.logs.lines(t, "http request")
			if l := lines[len(lines)-1]; l["remote"] != tc.peer || l["client_ip"] != tc.want {
				t.Fatalf("access log remote %v client_ip %v", l["remote"], l["client_ip"])
			}
		})
	}
	// An untrusted peer cannot choose its identity: X-Forwarded-For is
	// ignored, and rotating it does not buy a fresh bucket.
	if got := ipOf(xff("198.51.100.9:1", "203.0.113.50")); got != "198.51.100.9" {
		t.Fatalf("spoofed X-Forwarded-For honoured: %q", got)
	}
	want429(t, xff("198.51.100.9:1", "203.0.113.51"), "1000")
	// IPv6 clients share a bucket per /64.
	ipOf(xff("[2001:db8:1:2::1]:1"))
	want429(t, xff("[2001:db8:1:2::ffff]:1"), "1000")
	ipOf(xff("[2001:db8:1:3::1]:1"))
}

func TestRateLimitBucketsBounded(t *testing.T) {
	e, _ := newEnvClock(t, Config{RateLimitMaxKeys: 64})
	e.g.Mount(httpapi.Route{Method: "GET", Pattern: "/open", Handler: ok200, Public: true})
	for i := range 5000 {
		w := e.from(fmt.Sprintf("10.%d.%d.%d:1", i>>16&255, i>>8&255, i&255), "GET", "/open", "", nil)
		if w.Code != 200 {
			t.Fatalf("scan request %d: %d", i, w.Code)
		}
	}
	if n := e.g.edge.perIP.Len(); n > 64 {
		t.Fatalf("per-IP limiter holds %d buckets, bound 64", n)
	}
	if n := e.g.edge.classLimits["read"].Len(); n > 64 {
		t.Fatalf("read limiter holds %d buckets, bound 64", n)
	}
}

func TestCORS(t *testing.T) {
	e, _ := newEnvClock(t, Config{
		CORSOrigins: []string{"https://App.Example.com", "http://localhost:5173"},
		PerIP:       RateSpec{Rate: 1, Burst: 12},
	})
	e.g.Mount(
		httpapi.Route{Method: "GET", Pattern: "/user/{uid}", Handler: whoami},
		httpapi.Route{Method: "PATCH", Pattern: "/user/{uid}", Handler: whoami},
		httpapi.Route{Method: "POST", Pattern: "/chat/messages", Handler: whoami},
	)
	const good, evil = "https://app.example.com", "https://evil.example.com"
	preflight := func(origin, path string) *httptest.ResponseRecorder {
		return e.do("OPTIONS", path, "", nil, "Origin", origin, "Access-Control-Request-Method", "PATCH",
			"Access-Control-Request-Headers", "authorization, content-type")
	}
	w := preflight(good, "/user/me")
	wantStatus(t, w, http.StatusNoContent, "")
	h := w.Header()
	for k, v := range map[string]string{
		"Access-Control-Allow-Origin":  good,
		"Access-Control-Allow-Methods": "GET, PATCH",
		"Access-Control-Allow-Headers": "Authorization, Content-Type, Idempotency-Key, If-None-Match, X-Request-ID",
		"Access-Control-Max-Age":       "600",
	} {
		if h.Get(k) != v {
			t.Fatalf("preflight %s = %q, want %q", k, h.Get(k), v)
		}
	}
	if h.Get("Access-Control-Allow-Credentials") != "" {
		t.Fatal("credentials allowed without being configured")
	}
	if vary := strings.Join(h.Values("Vary"), ","); !strings.Contains(vary, "Origin") {
		t.Fatalf("preflight Vary %q", vary)
	}
	if w := preflight("http://localhost:5173", "/chat/messages"); w.Code != 204 ||
		w.Header().Get("Access-Control-Allow-Methods") != "POST" {
		t.Fatalf("second origin: %d %v", w.Code, w.Header())
	}
	// Refused origins get no CORS headers at all (never an echo).
	for _, o := range []string{evil, "null", "https://app.example.com.evil.com", "http://app.example.com"} {
		w := preflight(o, "/user/me")
		wantStatus(t, w, http.StatusForbidden, httpapi.CodeForbidden)
		if acao := w.Header().Get("Access-Control-Allow-Origin"); acao != "" {
			t.Fatalf("origin %q got Allow-Origin %q", o, acao)
		}
	}
	wantStatus(t, preflight(good, "/no/such/route"), 404, httpapi.CodeNotFound)

	// Actual requests.
	w = e.do("GET", "/user/me", "Bearer good-alice", nil, "Origin", good)
	wantStatus(t, w, 200, "")
	if w.Header().Get("Access-Control-Allow-Origin") != good ||
		w.Header().Get("Access-Control-Expose-Headers") != "ETag, Retry-After, X-Request-ID" ||
		w.Header().Get("Vary") != "Origin" {
		t.Fatalf("actual response headers %v", w.Header())
	}
	w = e.do("GET", "/user/me", "Bearer good-alice", nil, "Origin", evil)
	if w.Header().Get("Access-Control-Allow-Origin") != "" || w.Header().Get("Access-Control-Expose-Headers") != "" {
		t.Fatalf("evil origin got CORS headers %v", w.Header())
	}
	if w.Header().Get("Vary") != "Origin" {
		t.Fatal("no Vary: Origin on a refused origin's response (caches would mix them)")
	}
	// Errors carry CORS headers too, so a web app can read a 401 or a 429.
	w = e.do("GET", "/user/me", "", nil, "Origin", good)
	if w.Code != 401 || w.Header().Get("Access-Control-Allow-Origin") != good {
		t.Fatalf("401: %d %v", w.Code, w.Header())
	}
	var last *httptest.ResponseRecorder
	for range 10 {
		last = e.do("GET", "/user/me", "Bearer good-alice", nil, "Origin", good)
	}
	if last.Code != 429 || last.Header().Get("Access-Control-Allow-Origin") != good || last.Header().Get("Retry-After") == "" {
		t.Fatalf("429: %d %v", last.Code, last.Header())
	}
}

func TestCORSConfig(t *testing.T) {
	e := newEnv(t, Config{CORSOrigins: []string{"*"}})
	e.g.Mount(httpapi.Route{Method: "GET", Pattern: "/x", Handler: whoami, Public: true})
	w := e.do("GET", "/x", "", nil, "Origin", "https://anything.example")
	if w.Header().Get("Access-Control-Allow-Origin") != "*" || w.Header().Get("Access-Control-Allow-Credentials") != "" {
		t.Fatalf("* origin: %v", w.Header())
	}
	// Without CORS configured nothing is added, and preflights are refused.
	plain := newEnv(t, Config{})
	plain.g.Mount(httpapi.Route{Method: "GET", Pattern: "/x", Handler: whoami, Public: true})
	w = plain.do("GET", "/x", "", nil, "Origin", "https://anything.example")
	if len(w.Header().Values("Vary")) != 0 || w.Header().Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("CORS headers without CORS: %v", w.Header())
	}
	w = plain.do("OPTIONS", "/x", "", nil, "Origin", "https://a.example", "Access-Control-Request-Method", "GET")
	wantStatus(t, w, 403, httpapi.CodeForbidden)
	// A plain OPTIONS (no preflight) is the mux's 405.
	wantStatus(t, plain.do("OPTIONS", "/x", "", nil), 405, httpapi.CodeMethodNotAllow)

	e2 := newEnv(t, Config{CORSOrigins: []string{"https://app.example.com"}, CORSAllowCredentials: true})
	e2.g.Mount(httpapi.Route{Method: "GET", Pattern: "/x", Handler: whoami, Public: true})
	w = e2.do("GET", "/x", "", nil, "Origin", "https://app.example.com")
	if w.Header().Get("Access-Control-Allow-Credentials") != "true" {
		t.Fatalf("credentials: %v", w.Header())
	}
	for _, bad := range [][]string{
		{"https://app.example.com/path"}, {"app.example.com"}, {"ftp://x.example"}, {"https://u:p@x.example"},
		{"https://x.example?q=1"},
	} {
		if _, err := New(Config{Addr: "127.0.0.1:0", CORSOrigins: bad}, Deps{Verifier: testVerifier}); !errors.Is(err, ErrConfig) {
			t.Errorf("CORS origin %q: %v", bad, err)
		}
	}
	if _, err := New(Config{Addr: "127.0.0.1:0", CORSOrigins: []string{"*"}, CORSAllowCredentials: true},
		Deps{Verifier: testVerifier}); !errors.Is(err, ErrConfig) {
		t.Errorf("* with credentials: %v", err)
	}
}

func TestEdgeConfigValidation(t *testing.T) {
	for name, cfg := range map[string]Config{
		"bad CIDR":           {TrustedProxies: []string{"10.0.0.0/33"}},
		"not an IP":          {TrustedProxies: []string{"proxy.local"}},
		"zero rate":          {PerIP: RateSpec{Rate: 0, Burst: 5}},
		"zero burst":         {RateLimits: map[string]RateSpec{"read": {Rate: 5}}},
		"empty class":        {RateLimits: map[string]RateSpec{"": {Rate: 5, Burst: 5}}},
		"negative query":     {MaxQueryBytes: -1},
		"negative max keys":  {RateLimitMaxKeys: -1},
		"negative fields":    {MaxHeaderFields: -1},
		"short mapped CIDR":  {TrustedProxies: []string{"::ffff:0:0/64"}},
		"negative ip limits": {PerIP: RateSpec{Rate: 1, Burst: -1}},
	} {
		cfg.Addr = "127.0.0.1:0"
		if g, err := New(cfg, Deps{Verifier: testVerifier}); !errors.Is(err, ErrConfig) {
			if g != nil {
				g.Close()
			}
			t.Errorf("%s: %v, want ErrConfig", name, err)
		}
	}
	// Mapped IPv4 CIDRs mean their IPv4 range.
	e := newEnv(t, Config{TrustedProxies: []string{"::ffff:10.0.0.0/104"}})
	e.g.Mount(httpapi.Route{Method: "GET", Pattern: "/ip", Handler: ok200, Public: true})
	w := e.from("10.9.9.9:1", "GET", "/ip", "", nil, "X-Forwarded-For", "203.0.113.1")
	if !strings.Contains(w.Body.String(), "203.0.113.1") {
		t.Fatalf("mapped CIDR not trusted: %s", w.Body)
	}
}

func TestContentTypeCheck(t *testing.T) {
	e := newEnv(t, Config{})
	var handled atomic.Int32
	h := func(w http.ResponseWriter, _ *http.Request) { handled.Add(1); w.WriteHeader(204) }
	e.g.Mount(
		httpapi.Route{Method: "POST", Pattern: "/json", Handler: h, Public: true},
		httpapi.Route{Method: "POST", Pattern: "/upload", Handler: h, Public: true, Class: httpapi.ClassUpload},
	)
	for _, tc := range []struct {
		path, ctype, body string
		status            int
	}{
		{"/json", "application/json", "{}", 204},
		{"/json", "application/json; charset=utf-8", "{}", 204},
		{"/json", "Application/JSON", "{}", 204},
		{"/json", "", "", 204}, // no body, no type: fine
		{"/json", "text/plain", "{}", 415},
		{"/json", "", "{}", 415},
		{"/json", "application/x-www-form-urlencoded", "a=1", 415},
		{"/json", "application/json;;;", "{}", 415},
		{"/upload", "image/png", "\x89PNG", 204},
	} {
		handled.Store(0)
		hdr := []string{}
		if tc.ctype != "" {
			hdr = append(hdr, "Content-Type", tc.ctype)
		}
		var body io.Reader
		if tc.body != "" {
			body = strings.NewReader(tc.body)
		}
		w := e.do("POST", tc.path, "", body, hdr...)
		if w.Code != tc.status {
			t.Fatalf("%s %q: %d, want %d", tc.path, tc.ctype, w.Code, tc.status)
		}
		if tc.status == 415 {
			wantStatus(t, w, 415, httpapi.CodeUnsupported)
			if handled.Load() != 0 {
				t.Fatalf("%q: handler ran", tc.ctype)
			}
		}
	}
	// Chunked bodies (no declared length) are checked too.
	handled.Store(0)
	w := e.do("POST", "/json", "", io.MultiReader(strings.NewReader("{}")), "Content-Type", "text/plain")
	wantStatus(t, w, 415, httpapi.CodeUnsupported)
	if handled.Load() != 0 {
		t.Fatal("handler ran for a chunked body of the wrong type")
	}
}

func TestRequestLineAndHeaderLimits(t *testing.T) {
	e := newEnv(t, Config{MaxHeaderBytes: 2048, MaxHeaderFields: 20})
	e.g.Mount(httpapi.Route{Method: "GET", Pattern: "/q", Handler: ok200, Public: true})
	wantStatus(t, e.do("GET", "/q?a="+strings.Repeat("x", 2046), "", nil), 200, "")
	wantStatus(t, e.do("GET", "/q?a="+strings.Repeat("x", 2047), "", nil), 414, httpapi.CodeURITooLong)
	wantStatus(t, e.do("GET", "/q", "", nil, "X-Big", strings.Repeat("y", 2048)), 431, httpapi.CodeHeadersTooBig)
	req := httptest.NewRequest("GET", "/q", nil)
	for i := range 21 {
		req.Header.Add("X-Many", fmt.Sprint(i))
	}
	w := httptest.NewRecorder()
	e.g.Handler().ServeHTTP(w, req)
	wantStatus(t, w, 431, httpapi.CodeHeadersTooBig)

	// Over a real connection the JSON answer comes before net/http's own
	// (plain-text) cut-off.
	e.run(t)
	req, _ = http.NewRequest("GET", e.g.URL()+"/q", nil)
	req.Header.Set("X-Big", strings.Repeat("y", 4000))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 431 || errorCode(t, resp.Header.Get("Content-Type"), body) != httpapi.CodeHeadersTooBig {
		t.Fatalf("real 431: %d %s", resp.StatusCode, body)
	}
}

func TestConditionalGETThroughGateway(t *testing.T) {
	e := newEnv(t, Config{})
	var about atomic.Value
	about.Store("hi")
	e.g.Mount(httpapi.Route{Method: "GET", Pattern: "/user/{uid}", Handler: func(w http.ResponseWriter, r *http.Request) {
		httpapi.WriteJSONCached(w, r, 200, map[string]any{"userId": r.PathValue("uid"), "about": about.Load()},
			httpapi.CachePrivateRevalidate)
	}})
	w := e.do("GET", "/user/bob", "Bearer good-alice", nil)
	etag := w.Header().Get("ETag")
	if w.Code != 200 || etag == "" {
		t.Fatalf("first: %d %v", w.Code, w.Header())
	}
	w = e.do("GET", "/user/bob", "Bearer good-alice", nil, "If-None-Match", etag)
	if w.Code != 304 || w.Body.Len() != 0 || w.Header().Get("ETag") != etag {
		t.Fatalf("revalidation: %d %q %v", w.Code, w.Body, w.Header())
	}
	about.Store("changed")
	w = e.do("GET", "/user/bob", "Bearer good-alice", nil, "If-None-Match", etag)
	if w.Code != 200 || w.Header().Get("ETag") == etag || !strings.Contains(w.Body.String(), "changed") {
		t.Fatalf("after a change: %d %v %s", w.Code, w.Header(), w.Body)
	}
	if n, _ := testutil.MetricValue(t, e.reg, "edgechat_http_not_modified_total", map[string]string{"route": "/user/{uid}"}); n != 1 {
		t.Fatalf("not_modified = %v, want 1", n)
	}
}

// TestRateLimitOverTheWire: a real client hits the per-user limit, honours
// Retry-After on the injected clock and gets through again.
func TestRateLimitOverTheWire(t *testing.T) {
	e, clock := newEnvClock(t, Config{RateLimits: map[string]RateSpec{"read": {Rate: 0.5, Burst: 3}}})
	e.g.Mount(httpapi.Route{Method: "GET", Pattern: "/thing", Handler: ok200})
	e.run(t)
	get := func() *http.Response {
		req, _ := http.NewRequestWithContext(context.Background(), "GET", e.g.URL()+"/thing", nil)
		req.Header.Set("Authorization", "Bearer good-alice")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	for i := range 3 {
		if r := get(); r.StatusCode != 200 {
			t.Fatalf("request %d: %d", i, r.StatusCode)
		}
	}
	r := get()
	if r.StatusCode != 429 || r.Header.Get("Retry-After") != "2" {
		t.Fatalf("over the limit: %d Retry-After %q", r.StatusCode, r.Header.Get("Retry-After"))
	}
	clock.Advance(2 * time.Second)
	if r := get(); r.StatusCode != 200 {
		t.Fatalf("after Retry-After: %d", r.StatusCode)
	}
	lines := e.logs.lines(t, "http request")
	var statuses []any
	for _, l := range lines {
		statuses = append(statuses, l["status"])
		if l["user"] != "alice" || l["client_ip"] != "127.0.0.1" || l["request_id"] == "" {
			t.Fatalf("access log line %v", l)
		}
	}
	if fmt.Sprint(statuses) != "[200 200 200 429 200]" {
		t.Fatalf("logged statuses %v", statuses)
	}
}

// FuzzClientIP: any X-Forwarded-For parses without panicking, and the
// answer is the peer or an address that appears in the header.
func FuzzClientIP(f *testing.F) {
	for _, s := range []string{"203.0.113.7, 10.2.2.2", "", ",,", "::1, [::2]:80", "a, b, 10.0.0.1", "1.2.3.4:5"} {
		f.Add(s)
	}
	e, err := newEdge(&Config{TrustedProxies: []string{"10.0.0.0/8"}}, nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, xff string) {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = "10.1.1.1:1"
		r.Header.Set("X-Forwarded-For", xff)
		got := e.clientIP(r)
		if got == netip.MustParseAddr("10.1.1.1") {
			return
		}
		for _, hop := range strings.Split(xff, ",") {
			if a, ok := parseAddr(strings.TrimSpace(hop)); ok && a == got {
				return
			}
		}
		t.Fatalf("client %s is neither the peer nor a hop of X-Forwarded-For %q", got, xff)
	})
}

// Services never see a raw Authorization header, except a public route
// that checks its own shared secret (a webhook).
func TestAuthorizationHeaderReachesOnlyOwnAuthRoutes(t *testing.T) {
	e := newEnv(t, Config{})
	echo := func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, r.Header.Get("Authorization")) }
	e.g.Mount(httpapi.Route{Method: "GET", Pattern: "/public", Handler: echo, Public: true},
		httpapi.Route{Method: "GET", Pattern: "/hook", Handler: echo, Public: true, OwnAuth: true},
		httpapi.Route{Method: "GET", Pattern: "/private", Handler: echo, OwnAuth: true})
	for path, want := range map[string]string{"/public": "", "/hook": "Bearer good-alice", "/private": ""} {
		w := e.do("GET", path, "Bearer good-alice", nil)
		if w.Code != 200 || w.Body.String() != want {
			t.Errorf("%s: %d %q, want %q", path, w.Code, w.Body.String(), want)
		}
	}
}

// The cluster's own nodes' origins (Deps.PeerOrigin) are allowed like
// configured ones: a page one node served reaches the API of another.
func TestCORSPeerOrigins(t *testing.T) {
	peer := "http://127.0.0.1:4000"
	g, err := New(Config{Addr: "127.0.0.1:0"}, Deps{Verifier: testVerifier, Logger: testutil.QuietLogger(),
		PeerOrigin: func(o string) bool { return o == peer }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = g.Close() })
	g.Mount(httpapi.Route{Method: "GET", Pattern: "/cluster/connect", Handler: whoami})
	e := &env{g: g}
	w := e.do("OPTIONS", "/cluster/connect", "", nil, "Origin", peer, "Access-Control-Request-Method", "GET",
		"Access-Control-Request-Headers", "authorization")
	if w.Code != http.StatusNoContent || w.Header().Get("Access-Control-Allow-Origin") != peer {
		t.Fatalf("peer preflight: %d %v", w.Code, w.Header())
	}
	w = e.do("GET", "/cluster/connect", "Bearer good-alice", nil, "Origin", peer)
	if w.Code != 200 || w.Header().Get("Access-Control-Allow-Origin") != peer {
		t.Fatalf("peer request: %d %v", w.Code, w.Header())
	}
	w = e.do("OPTIONS", "/cluster/connect", "", nil, "Origin", "http://127.0.0.1:4001", "Access-Control-Request-Method", "GET")
	if w.Code != http.StatusForbidden || w.Header().Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("another origin: %d %v", w.Code, w.Header())
	}
}

// A request that a trusted proxy received over TLS (X-Forwarded-Proto:
// https) is secure to the handlers (the session cookie is then marked
// Secure); the same header from anyone else is not believed.
func TestForwardedTLSFromTrustedProxiesOnly(t *testing.T) {
	e := newEnv(t, Config{TrustedProxies: []string{"10.0.0.0/8"}})
	e.g.Mount(httpapi.Route{Method: "GET", Pattern: "/secure", Public: true, Handler: func(w http.ResponseWriter, r *http.Request) {
		httpapi.WriteJSON(w, http.StatusOK, map[string]bool{"secure": httpapi.IsSecure(r)})
	}})
	for _, tc := range []struct {
		name, peer string
		proto      []string
		want       bool
	}{
		{"trusted proxy, https", "10.1.1.1:5000", []string{"https"}, true},
		{"trusted proxy, the nearest hop's value", "10.1.1.1:5000", []string{"http, https"}, true},
		{"trusted proxy, http", "10.1.1.1:5000", []string{"http"}, false},
		{"trusted proxy, no header", "10.1.1.1:5000", nil, false},
		{"untrusted peer, https", "203.0.113.7:5000", []string{"https"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest("GET", "/secure", nil)
			req.RemoteAddr = tc.peer
			for _, v := range tc.proto {
				req.Header.Add("X-Forwarded-Proto", v)
			}
			w := httptest.NewRecorder()
			e.g.Handler().ServeHTTP(w, req)
			var v map[string]bool
			if err := json.Unmarshal(w.Body.Bytes(), &v); err != nil || v["secure"] != tc.want {
				t.Fatalf("%d %s: secure %v, want %v", w.Code, w.Body, v["secure"], tc.want)
			}
		})
	}
}
