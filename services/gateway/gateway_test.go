package gateway

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgechat/edgechat/internal/httpapi"
	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/internal/wire"
)

// ---- fakes and helpers ----

type verifier map[string]wire.Principal

func (v verifier) VerifyAccessToken(tok string) (wire.Principal, error) {
	if tok == "jwks-down" {
		return wire.Principal{}, fmt.Errorf("fetching keys: %w", wire.ErrUnavailable)
	}
	p, ok := v[tok]
	if !ok {
		return wire.Principal{}, fmt.Errorf("verify: %w", wire.ErrBadToken)
	}
	return p, nil
}

var testVerifier = verifier{
	"good-alice": {UserID: "alice"},
	"good-admin": {UserID: "root", Admin: true},
	"no-user":    {},
}

// lockedBuf is the gateway's log sink in tests.
type lockedBuf struct{ testutil.SyncBuffer }

// lines decodes the JSON log lines with the given msg ("": every line).
func (l *lockedBuf) lines(t *testing.T, msg string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, ln := range strings.Split(strings.TrimSpace(l.String()), "\n") {
		if ln == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(ln), &m); err != nil {
			t.Fatalf("log line %q: %v", ln, err)
		}
		if msg == "" || m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

type env struct {
	g     *Gateway
	reg   *prometheus.Registry
	logs  *lockedBuf
	ready atomic.Pointer[error]
}

func newEnv(t *testing.T, cfg Config) *env {
	t.Helper()
	e := &env{reg: prometheus.NewRegistry(), logs: &lockedBuf{}}
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	g, err := New(cfg, Deps{
		Verifier: testVerifier,
		Ready: func() error {
			if p := e.ready.Load(); p != nil {
				return *p
			}
			return nil
		},
		Logger:     slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Registerer: e.reg,
		Gatherer:   e.reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = g.Close() })
	e.g = g
	return e
}

// run serves e.g until the test ends and checks that Run returns nil.
func (e *env) run(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.g.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run = %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Run did not return")
		}
	})
}

func (e *env) do(method, path, auth string, body io.Reader, hdr ...string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, body)
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

func errorCode(t *testing.T, contentType string, body []byte) string {
	t.Helper()
	if contentType != "application/json" {
		t.Fatalf("error content type %q (body %q)", contentType, body)
	}
	var v struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("error body %q: %v", body, err)
	}
	return v.Error.Code
}

// whoami answers with the principal and what the handler could see.
func whoami(w http.ResponseWriter, r *http.Request) {
	p, ok := httpapi.PrincipalFrom(r.Context())
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{
		"ok": ok, "user": p.UserID, "admin": p.Admin,
		"authHeader": r.Header.Get("Authorization"),
		"requestId":  RequestID(r.Context()),
		"reqHeader":  r.Header.Get(HeaderRequestID),
		"pathValue":  r.PathValue("x"),
	})
}

// ---- tests ----

func TestAuthentication(t *testing.T) {
	e := newEnv(t, Config{})
	e.g.Mount(
		httpapi.Route{Method: "GET", Pattern: "/open", Handler: whoami, Public: true},
		httpapi.Route{Method: "GET", Pattern: "/closed/{x}", Handler: whoami},
	)
	for _, tc := range []struct {
		name, path, auth string
		status           int
		challenge        string // WWW-Authenticate on 401
		user             string
	}{
		{"public without token", "/open", "", 200, "", ""},
		{"public ignores a bad token", "/open", "Bearer nonsense", 200, "", ""},
		{"missing", "/closed/1", "", 401, `Bearer realm="edgechat"`, ""},
		{"wrong scheme", "/closed/1", "Basic YWxpY2U6cHc=", 401, `Bearer realm="edgechat", error="invalid_token"`, ""},
		{"scheme only", "/closed/1", "Bearer", 401, `Bearer realm="edgechat", error="invalid_token"`, ""},
		{"empty token", "/closed/1", "Bearer   ", 401, `Bearer realm="edgechat", error="invalid_token"`, ""},
		{"two tokens", "/closed/1", "Bearer good-alice good-alice", 401, `Bearer realm="edgechat", error="invalid_token"`, ""},
		{"rejected", "/closed/1", "Bearer forged", 401, `Bearer realm="edgechat", error="invalid_token"`, ""},
		{"token without user", "/closed/1", "Bearer no-user", 401, `Bearer realm="edgechat", error="invalid_token"`, ""},
		{"verifier unavailable", "/closed/1", "Bearer jwks-down", 503, "", ""},
		{"valid", "/closed/1", "Bearer good-alice", 200, "", "alice"},
		{"scheme is case-insensitive", "/closed/1", "bearer good-admin", 200, "", "root"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := e.do("GET", tc.path, tc.auth, nil)
			if w.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", w.Code, tc.status, w.Body)
			}
			if got := w.Header().Get("WWW-Authenticate"); got != tc.challenge {
				t.Fatalf("WWW-Authenticate %q, want %q", got, tc.challenge)
			}
			switch tc.status {
			case 401:
				if c := errorCode(t, w.Header().Get("Content-Type"), w.Body.Bytes()); c != httpapi.CodeUnauthorized {
					t.Fatalf("code %q", c)
				}
				return
			case 503:
				if c := errorCode(t, w.Header().Get("Content-Type"), w.Body.Bytes()); c != httpapi.CodeUnavailable {
					t.Fatalf("code %q", c)
				}
				if ra := w.Header().Get("Retry-After"); ra != "1" {
					t.Fatalf("Retry-After %q, want 1 as every other 503 (a client knows when to try again)", ra)
				}
				return
			}
			var got map[string]any
			if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
				t.Fatal(err)
			}
			if got["authHeader"] != "" {
				t.Fatalf("handler saw the raw token: %v", got["authHeader"])
			}
			if tc.user == "" {
				if got["ok"] != false {
					t.Fatalf("public route got a principal: %v", got)
				}
				return
			}
			if got["ok"] != true || got["user"] != tc.user || got["pathValue"] != "1" {
				t.Fatalf("handler saw %v, want user %s and path value 1", got, tc.user)
			}
		})
	}
}

func TestRequestID(t *testing.T) {
	e := newEnv(t, Config{})
	e.g.Mount(httpapi.Route{Method: "GET", Pattern: "/who", Handler: whoami, Public: true})
	seen := map[string]bool{}
	for range 3 {
		w := e.do("GET", "/who", "", nil)
		id := w.Header().Get(HeaderRequestID)
		if len(id) != 24 || seen[id] {
			t.Fatalf("generated request ID %q (seen before: %v)", id, seen[id])
		}
		seen[id] = true
		var got map[string]any
		_ = json.Unmarshal(w.Body.Bytes(), &got)
		if got["requestId"] != id || got["reqHeader"] != id {
			t.Fatalf("handler saw %v / %v, response says %s", got["requestId"], got["reqHeader"], id)
		}
	}
	// A sane incoming ID is kept; a hostile one is replaced.
	w := e.do("GET", "/who", "", nil, HeaderRequestID, "lb-7f3a:12.x_y")
	if got := w.Header().Get(HeaderRequestID); got != "lb-7f3a:12.x_y" {
		t.Fatalf("incoming ID not propagated: %q", got)
	}
	for _, bad := range []string{"has space", "quote\"s", strings.Repeat("a", 129), "ünïcode"} {
		w := e.do("GET", "/who", "", nil, HeaderRequestID, bad)
		if got := w.Header().Get(HeaderRequestID); got == bad || len(got) != 24 {
			t.Fatalf("bad incoming ID %q gave %q", bad, got)
		}
	}
	// Errors produced by the gateway itself carry it too.
	w = e.do("GET", "/nowhere", "", nil, HeaderRequestID, "abc")
	if got := w.Header().Get(HeaderRequestID); got != "abc" {
		t.Fatalf("404 request ID %q", got)
	}
}

func TestNotFoundAndMethodNotAllowedAreJSON(t *testing.T) {
	e := newEnv(t, Config{})
	e.g.Mount(httpapi.Route{Method: "POST", Pattern: "/thing", Handler: whoami, Public: true})

	w := e.do("GET", "/no/such/thing", "", nil)
	if w.Code != 404 || errorCode(t, w.Header().Get("Content-Type"), w.Body.Bytes()) != httpapi.CodeNotFound {
		t.Fatalf("404: %d %q", w.Code, w.Body)
	}
	w = e.do("DELETE", "/healthz", "", nil)
	if w.Code != 405 || errorCode(t, w.Header().Get("Content-Type"), w.Body.Bytes()) != httpapi.CodeMethodNotAllow {
		t.Fatalf("405: %d %q", w.Code, w.Body)
	}
	if allow := w.Header().Get("Allow"); !strings.Contains(allow, "GET") {
		t.Fatalf("405 Allow = %q", allow)
	}
	w = e.do("GET", "/thing", "", nil)
	if w.Code != 405 || !strings.Contains(w.Header().Get("Allow"), "POST") {
		t.Fatalf("GET /thing: %d Allow %q", w.Code, w.Header().Get("Allow"))
	}
	// Path cleaning still redirects (not an error).
	w = e.do("GET", "/a/../healthz", "", nil)
	if w.Code != http.StatusTemporaryRedirect && w.Code != http.StatusMovedPermanently {
		t.Fatalf("unclean path: %d %q", w.Code, w.Body)
	}
	if n, _ := testutil.MetricValue(t, e.reg, "edgechat_http_requests_total", map[string]string{"route": "unmatched", "status": "404"}); n != 1 {
		t.Fatalf("unmatched 404 counted %v times", n)
	}
}

func TestHealthAndReadiness(t *testing.T) {
	e := newEnv(t, Config{})
	w := e.do("GET", "/healthz", "", nil)
	if w.Code != 200 || strings.TrimSpace(w.Body.String()) != `{"status":"ok"}` {
		t.Fatalf("healthz: %d %q", w.Code, w.Body)
	}
	if w := e.do("GET", "/readyz", "", nil); w.Code != 200 {
		t.Fatalf("readyz while ready: %d %s", w.Code, w.Body)
	}
	notReady := errors.New("raft: no leader")
	e.ready.Store(&notReady)
	w = e.do("GET", "/readyz", "", nil)
	if w.Code != 503 || errorCode(t, w.Header().Get("Content-Type"), w.Body.Bytes()) != httpapi.CodeUnavailable ||
		!strings.Contains(w.Body.String(), "no leader") {
		t.Fatalf("readyz while not ready: %d %s", w.Code, w.Body)
	}
	// Probes while not ready: the change is logged once, with its
	// reason, and no probe is an error line; a new reason is a change.
	e.do("GET", "/readyz", "", nil)
	e.do("GET", "/readyz", "", nil)
	stalled := errors.New("applying a Raft entry is stalled")
	e.ready.Store(&stalled)
	e.do("GET", "/readyz", "", nil)
	e.ready.Store(nil)
	if w := e.do("GET", "/readyz", "", nil); w.Code != 200 {
		t.Fatalf("readyz back: %d", w.Code)
	}
	e.do("GET", "/readyz", "", nil)
	var changes []string
	for _, l := range e.logs.lines(t, "") {
		switch {
		case l["msg"] == "http request" && l["level"] != "DEBUG":
			t.Fatalf("a probe logged above debug level: %v", l)
		case l["msg"] == "not ready":
			changes = append(changes, fmt.Sprintf("%v not ready: %v", l["level"], l["reason"]))
		case l["msg"] == "ready again":
			changes = append(changes, fmt.Sprintf("%v ready again", l["level"]))
		}
	}
	want := []string{"WARN not ready: raft: no leader", "WARN not ready: applying a Raft entry is stalled", "INFO ready again"}
	if fmt.Sprint(changes) != fmt.Sprint(want) {
		t.Fatalf("readiness changes logged %q, want %q", changes, want)
	}
	// A nil Ready func means always ready.
	g, err := New(Config{Addr: "127.0.0.1:0"}, Deps{Verifier: testVerifier})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	rec := httptest.NewRecorder()
	g.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
	if rec.Code != 200 {
		t.Fatalf("nil Ready: %d", rec.Code)
	}
	rec = httptest.NewRecorder()
	g.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 404 {
		t.Fatalf("/metrics without a Gatherer: %d", rec.Code)
	}
}

// Warnings go into a ready node's /readyz answer and leave it ready.
func TestReadinessWarnings(t *testing.T) {
	var warn []string
	g, err := New(Config{Addr: "127.0.0.1:0"}, Deps{Verifier: testVerifier, Warnings: func() []string { return warn }})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	get := func() (int, string) {
		rec := httptest.NewRecorder()
		g.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
		return rec.Code, strings.TrimSpace(rec.Body.String())
	}
	if code, body := get(); code != 200 || body != `{"status":"ready"}` {
		t.Fatalf("no warnings: %d %s", code, body)
	}
	warn = []string{"last backup is 3h old, over twice --backup-every (1h)"}
	if code, body := get(); code != 200 || body != `{"status":"ready","warnings":["last backup is 3h old, over twice --backup-every (1h)"]}` {
		t.Fatalf("with a warning: %d %s", code, body)
	}
}

func TestMetricsEndpoint(t *testing.T) {
	e := newEnv(t, Config{})
	e.g.Mount(httpapi.Route{Method: "GET", Pattern: "/presence/{uid}", Handler: whoami})
	e.do("GET", "/healthz", "", nil)
	e.do("GET", "/presence/bob", "Bearer good-alice", nil)
	e.do("GET", "/presence/carol", "Bearer good-alice", nil)
	e.do("GET", "/presence/carol", "", nil)
	w := e.do("GET", "/metrics", "", nil)
	if w.Code != 200 {
		t.Fatalf("/metrics: %d", w.Code)
	}
	body := w.Body.String()
	for _, want := range []string{
		`edgechat_http_requests_total{method="GET",route="/healthz",status="200"} 1`,
		`edgechat_http_requests_total{method="GET",route="/presence/{uid}",status="200"} 2`,
		`edgechat_http_requests_total{method="GET",route="/presence/{uid}",status="401"} 1`,
		`edgechat_http_request_seconds_count{route="/presence/{uid}"} 3`,
	} {
		if !strings.Contains(body, want) {
			t.Fatalf("/metrics lacks %s:\n%s", want, body)
		}
	}
}

func TestAccessLog(t *testing.T) {
	e := newEnv(t, Config{})
	e.g.Mount(httpapi.Route{Method: "GET", Pattern: "/who/{x}", Handler: whoami})
	w := e.do("GET", "/who/1?secret=1", "Bearer good-alice", nil, HeaderRequestID, "req-1")
	lines := e.logs.lines(t, "http request")
	if len(lines) != 1 {
		t.Fatalf("%d access-log lines, want 1", len(lines))
	}
	l := lines[0]
	want := map[string]any{
		"method": "GET", "route": "/who/{x}", "path": "/who/1", "status": float64(200),
		"user": "alice", "request_id": "req-1", "bytes": float64(w.Body.Len()),
	}
	for k, v := range want {
		if l[k] != v {
			t.Fatalf("log %s = %v, want %v (line %v)", k, l[k], v, l)
		}
	}
	if _, ok := l["duration"]; !ok {
		t.Fatalf("no duration: %v", l)
	}
}

// The client of a failed request sees "internal error" (or 507 for a
// full disk); the cause is on the access-log line for the operator.
func TestAccessLogCarriesTheCauseOfAServerError(t *testing.T) {
	e := newEnv(t, Config{})
	e.g.Mount(httpapi.Route{Method: "GET", Pattern: "/fail", Handler: func(w http.ResponseWriter, r *http.Request) {
		httpapi.WriteError(w, fmt.Errorf("writing the thumbnail: %w", errors.New("disk on fire")))
	}})
	e.g.Mount(httpapi.Route{Method: "GET", Pattern: "/full", Handler: func(w http.ResponseWriter, r *http.Request) {
		httpapi.WriteError(w, fmt.Errorf("storing the upload: %w", &os.PathError{Op: "write", Path: "/data/tmp/x", Err: syscall.ENOSPC}))
	}})
	for _, c := range []struct {
		path, code, cause string
		status            int
	}{
		{"/fail", httpapi.CodeInternal, "writing the thumbnail: disk on fire", 500},
		{"/full", httpapi.CodeNoSpace, "storing the upload: write /data/tmp/x: no space left on device", 507},
	} {
		w := e.do("GET", c.path, "Bearer good-alice", nil)
		if w.Code != c.status || errorCode(t, w.Header().Get("Content-Type"), w.Body.Bytes()) != c.code {
			t.Fatalf("%s: %d %s, want %d %s", c.path, w.Code, w.Body.String(), c.status, c.code)
		}
		if strings.Contains(w.Body.String(), "fire") || strings.Contains(w.Body.String(), "/data") {
			t.Fatalf("%s: the cause reached the client: %s", c.path, w.Body.String())
		}
		var line map[string]any
		for _, l := range e.logs.lines(t, "http request") {
			if l["path"] == c.path {
				line = l
			}
		}
		if line == nil || line["error"] != c.cause || line["level"] != "ERROR" {
			t.Fatalf("%s: access-log line %v, want level ERROR and error %q", c.path, line, c.cause)
		}
	}
	if w := e.do("GET", "/full", "Bearer good-alice", nil); w.Header().Get("Retry-After") == "" {
		t.Fatal("507 without Retry-After")
	}
}

func TestPanicRecovery(t *testing.T) {
	e := newEnv(t, Config{})
	e.g.Mount(
		httpapi.Route{Method: "GET", Pattern: "/boom", Public: true, Handler: func(http.ResponseWriter, *http.Request) {
			panic("kaboom")
		}},
		httpapi.Route{Method: "GET", Pattern: "/halfway", Public: true, Handler: func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(200)
			_, _ = w.Write([]byte("partial"))
			w.(http.Flusher).Flush()
			panic("late kaboom")
		}},
	)
	e.run(t)
	client := &http.Client{Timeout: 10 * time.Second}
	for range 2 { // the server keeps serving after a panic
		resp, err := client.Get(e.g.URL() + "/boom")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 500 || errorCode(t, resp.Header.Get("Content-Type"), body) != httpapi.CodeInternal {
			t.Fatalf("panic: %d %q", resp.StatusCode, body)
		}
		if strings.Contains(string(body), "kaboom") {
			t.Fatalf("panic value leaked to the client: %s", body)
		}
	}
	// A panic after the response started aborts it: the client must not
	// mistake the truncated body for a success.
	resp, err := client.Get(e.g.URL() + "/halfway")
	if err == nil {
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	if err == nil {
		t.Fatal("truncated response read without error")
	}
	resp, err = client.Get(e.g.URL() + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("after panics: %v %v", resp, err)
	}
	resp.Body.Close()
	var panics int
	for _, l := range e.logs.lines(t, "http: handler panic") {
		if l["stack"] == nil || l["request_id"] == "" {
			t.Fatalf("panic log lacks stack/request id: %v", l)
		}
		panics++
	}
	if panics != 3 {
		t.Fatalf("%d panic log lines, want 3", panics)
	}
}

func TestBodyLimit(t *testing.T) {
	e := newEnv(t, Config{})
	var called atomic.Int32
	decode := func(w http.ResponseWriter, r *http.Request) {
		called.Add(1)
		var v map[string]any
		if err := httpapi.DecodeJSON(r, &v, 1<<30); err != nil { // the gateway's limit must bite first
			httpapi.WriteError(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}
	e.g.Mount(
		httpapi.Route{Method: "POST", Pattern: "/small", Handler: decode, MaxBody: 16, Public: true},
		httpapi.Route{Method: "POST", Pattern: "/default", Handler: decode, Public: true},
	)
	e.run(t)

	post := func(path string, body io.Reader) (int, string) {
		t.Helper()
		resp, err := http.Post(e.g.URL()+path, "application/json", body)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode >= 400 {
			return resp.StatusCode, errorCode(t, resp.Header.Get("Content-Type"), b)
		}
		return resp.StatusCode, ""
	}
	if st, _ := post("/small", strings.NewReader(`{"a":1}`)); st != 204 {
		t.Fatalf("small body: %d", st)
	}
	// Declared length over the limit: refused before the handler runs.
	called.Store(0)
	big := `{"a":"` + strings.Repeat("x", 100) + `"}`
	if st, code := post("/small", strings.NewReader(big)); st != 413 || code != httpapi.CodeTooLarge {
		t.Fatalf("oversized body: %d %s", st, code)
	}
	if called.Load() != 0 {
		t.Fatal("handler ran for a body declared over the limit")
	}
	// Chunked (no declared length): cut off while reading.
	if st, code := post("/small", io.MultiReader(strings.NewReader(big))); st != 413 || code != httpapi.CodeTooLarge {
		t.Fatalf("oversized chunked body: %d %s", st, code)
	}
	// MaxBody 0 means httpapi.DefaultMaxBody.
	huge := `{"a":"` + strings.Repeat("x", httpapi.DefaultMaxBody) + `"}`
	if st, code := post("/default", strings.NewReader(huge)); st != 413 || code != httpapi.CodeTooLarge {
		t.Fatalf("over default limit: %d %s", st, code)
	}
	ok := `{"a":"` + strings.Repeat("x", httpapi.DefaultMaxBody-100) + `"}`
	if st, _ := post("/default", strings.NewReader(ok)); st != 204 {
		t.Fatalf("under default limit: %d", st)
	}
}

func TestRealListenerPrincipalAndWebSocketHijack(t *testing.T) {
	e := newEnv(t, Config{})
	e.g.Mount(httpapi.Route{Method: "GET", Pattern: "/user/me", Handler: whoami})
	upgrader := websocket.Upgrader{Subprotocols: []string{"mqtt"}}
	e.g.Handle("/mqtt", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := upgrader.Upgrade(w, r, nil)
		if err != nil {
			return // Upgrade already answered
		}
		defer c.Close()
		for {
			mt, msg, err := c.ReadMessage()
			if err != nil {
				return
			}
			if err := c.WriteMessage(mt, append([]byte("echo:"), msg...)); err != nil {
				return
			}
		}
	}))
	e.run(t)

	req, _ := http.NewRequest("GET", e.g.URL()+"/user/me", nil)
	req.Header.Set("Authorization", "Bearer good-alice")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&got)
	resp.Body.Close()
	if resp.StatusCode != 200 || got["user"] != "alice" || resp.Header.Get(HeaderRequestID) == "" {
		t.Fatalf("over the wire: %d %v", resp.StatusCode, got)
	}

	wsURL := "ws://" + e.g.Addr() + "/mqtt"
	d := websocket.Dialer{Subprotocols: []string{"mqtt"}, HandshakeTimeout: 5 * time.Second}
	c, hresp, err := d.Dial(wsURL, nil)
	if err != nil {
		t.Fatalf("websocket dial through the gateway: %v (%v)", err, hresp)
	}
	if c.Subprotocol() != "mqtt" {
		t.Fatalf("subprotocol %q", c.Subprotocol())
	}
	for _, m := range []string{"one", "two"} {
		if err := c.WriteMessage(websocket.BinaryMessage, []byte(m)); err != nil {
			t.Fatal(err)
		}
		_, msg, err := c.ReadMessage()
		if err != nil || string(msg) != "echo:"+m {
			t.Fatalf("echo: %q %v", msg, err)
		}
	}
	c.Close()
	// The hijacked request is logged and counted once it ends, as a 101.
	testutil.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		if n, _ := testutil.MetricValue(t, e.reg, "edgechat_http_requests_total", map[string]string{"route": "/mqtt", "status": "101"}); n != 1 {
			return fmt.Errorf("/mqtt 101 counted %v times", n)
		}
		return nil
	})
	if _, ok := testutil.MetricValue(t, e.reg, "edgechat_http_request_seconds", map[string]string{"route": "/mqtt"}); ok {
		t.Fatal("websocket lifetime observed as request latency")
	}
}

func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "edgechat test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

func TestTLSWithHTTP2(t *testing.T) {
	cert, pool := selfSigned(t)
	// A caller's config that prefers HTTP/1.1 still gets HTTP/2 first.
	callerCfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS10, NextProtos: []string{"http/1.1"}}
	e := newEnv(t, Config{TLS: callerCfg})
	if callerCfg.MinVersion != tls.VersionTLS10 || len(callerCfg.NextProtos) != 1 {
		t.Fatal("New modified the caller's tls.Config")
	}
	if !strings.HasPrefix(e.g.URL(), "https://127.0.0.1:") {
		t.Fatalf("URL %q", e.g.URL())
	}
	e.g.Mount(httpapi.Route{Method: "GET", Pattern: "/user/me", Handler: whoami})
	e.run(t)

	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: pool},
		ForceAttemptHTTP2: true,
	}}
	defer client.CloseIdleConnections()
	req, _ := http.NewRequest("GET", e.g.URL()+"/user/me", nil)
	req.Header.Set("Authorization", "Bearer good-alice")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&got)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.ProtoMajor != 2 || got["user"] != "alice" {
		t.Fatalf("HTTPS: %d %s %v", resp.StatusCode, resp.Proto, got)
	}

	// TLS 1.1 is refused; TLS 1.2 is accepted.
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	old, err := tls.DialWithDialer(dialer, "tcp", e.g.Addr(), &tls.Config{RootCAs: pool, MaxVersion: tls.VersionTLS11})
	if err == nil {
		old.Close()
		t.Fatal("TLS 1.1 handshake succeeded")
	}
	c12, err := tls.DialWithDialer(dialer, "tcp", e.g.Addr(), &tls.Config{RootCAs: pool, MaxVersion: tls.VersionTLS12,
		NextProtos: []string{"http/1.1", "h2"}})
	if err != nil {
		t.Fatalf("TLS 1.2: %v", err)
	}
	if st := c12.ConnectionState(); st.Version != tls.VersionTLS12 || st.NegotiatedProtocol != "h2" {
		t.Fatalf("TLS 1.2 connection: version %x ALPN %q", st.Version, st.NegotiatedProtocol)
	}
	c12.Close()
	// Plain HTTP on the TLS port gets no API.
	resp, err = http.Get("http://" + e.g.Addr() + "/healthz")
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Fatal("plain HTTP served on the TLS port")
		}
	}
}

func TestRunGracefulShutdown(t *testing.T) {
	e := newEnv(t, Config{})
	started, release := make(chan struct{}), make(chan struct{})
	e.g.Mount(httpapi.Route{Method: "GET", Pattern: "/slow", Public: true, Handler: func(w http.ResponseWriter, _ *http.Request) {
		close(started)
		<-release
		httpapi.WriteJSON(w, 200, map[string]string{"done": "yes"})
	}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.g.Run(ctx) }()

	type result struct {
		status int
		err    error
	}
	res := make(chan result, 1)
	go func() {
		resp, err := http.Get(e.g.URL() + "/slow")
		if err != nil {
			res <- result{err: err}
			return
		}
		resp.Body.Close()
		res <- result{status: resp.StatusCode}
	}()
	<-started
	if err := e.g.Run(ctx); !errors.Is(err, ErrRunning) {
		t.Fatalf("second Run = %v", err)
	}
	cancel()
	// Shutdown stops accepting at once...
	testutil.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		c, err := net.DialTimeout("tcp", e.g.Addr(), time.Second)
		if err == nil {
			c.Close()
			return errors.New("still accepting")
		}
		return nil
	})
	// ...but lets the in-flight request finish.
	close(release)
	r := <-res
	if r.err != nil || r.status != 200 {
		t.Fatalf("in-flight request: %d %v", r.status, r.err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
	}
}

func TestNewValidates(t *testing.T) {
	if _, err := New(Config{Addr: "127.0.0.1:0"}, Deps{}); !errors.Is(err, ErrConfig) {
		t.Fatalf("no verifier: %v", err)
	}
	if _, err := New(Config{Addr: "127.0.0.1:0", TLS: &tls.Config{}}, Deps{Verifier: testVerifier}); !errors.Is(err, ErrConfig) {
		t.Fatalf("TLS without certificate: %v", err)
	}
	if _, err := New(Config{Addr: "127.0.0.1:0", ReadHeaderTimeout: -1}, Deps{Verifier: testVerifier}); !errors.Is(err, ErrConfig) {
		t.Fatalf("negative timeout: %v", err)
	}
	e := newEnv(t, Config{})
	if _, err := New(Config{Addr: e.g.Addr()}, Deps{Verifier: testVerifier}); err == nil {
		t.Fatal("second bind on a busy port succeeded")
	}
	if _, err := New(Config{Addr: "127.0.0.1:0"}, Deps{Verifier: testVerifier, Registerer: e.reg}); err == nil {
		t.Fatal("registering metrics twice succeeded")
	}
	if !strings.HasPrefix(e.g.URL(), "http://127.0.0.1:") || strings.HasSuffix(e.g.Addr(), ":0") {
		t.Fatalf("URL %q Addr %q", e.g.URL(), e.g.Addr())
	}
}

func TestMountRejectsBadRoutes(t *testing.T) {
	e := newEnv(t, Config{})
	for _, rt := range []httpapi.Route{
		{Method: "GET", Pattern: "/x"},                 // nil handler
		{Method: "", Pattern: "/x", Handler: whoami},   // no method
		{Method: "GET", Pattern: "x", Handler: whoami}, // relative
		{Method: "GET", Pattern: "/x", Handler: whoami, MaxBody: -1},
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Fatalf("Mount(%+v) did not panic", rt)
				}
			}()
			// The good route first must not be mounted when the batch is bad.
			e.g.Mount(httpapi.Route{Method: "GET", Pattern: "/fine", Handler: whoami, Public: true}, rt)
		}()
	}
	if w := e.do("GET", "/fine", "", nil); w.Code != 404 {
		t.Fatalf("part of a bad batch was mounted: %d", w.Code)
	}
}

func TestPatternsListsWhatIsServed(t *testing.T) {
	e := newEnv(t, Config{})
	e.g.Mount(
		httpapi.Route{Method: "POST", Pattern: "/b/{id}", Handler: whoami},
		httpapi.Route{Method: "GET", Pattern: "/a", Handler: whoami, Public: true},
	)
	e.g.Handle("/raw", http.NotFoundHandler())
	want := []string{"/raw", "GET /a", "GET /healthz", "GET /metrics", "GET /readyz", "POST /b/{id}"}
	if got := e.g.Patterns(); !slices.Equal(got, want) {
		t.Fatalf("Patterns() = %q, want %q", got, want)
	}
}
