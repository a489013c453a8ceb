package gateway

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/edgechat/edgechat/internal/httpapi"
	"github.com/edgechat/edgechat/internal/ratelimit"
	"github.com/edgechat/edgechat/internal/wire"
)

// HeaderRequestID carries the request ID in both directions.
const HeaderRequestID = "X-Request-ID"

const maxRequestIDLen = 128

// reqInfo is filled in as the request travels inwards and read by the
// outermost layer for the access log; one per request, one goroutine.
type reqInfo struct {
	id   string
	user string
	ip   netip.Addr // the client's address (see Config.TrustedProxies)
	peer string     // the connection's RemoteAddr
	// member is the cluster member whose own request this is (peerRequest),
	// "" for a client's: it takes no token of the per-IP or class buckets.
	member string
	raw    http.ResponseWriter // the server's own writer, for http.MaxBytesReader
	body   *timedBody          // the request's body, when it has one
	sw     *statusWriter       // the writer of the answer (limitWrites)
}

type infoKey struct{}

// RequestID returns the request ID the gateway assigned to the request
// (for handlers that log).
func RequestID(ctx context.Context) string {
	if info, ok := ctx.Value(infoKey{}).(*reqInfo); ok {
		return info.id
	}
	return ""
}

func addrString(a netip.Addr) string {
	if a.IsValid() {
		return a.String()
	}
	return ""
}

// ClientIP returns the client address the gateway determined for the
// request (the peer, or the X-Forwarded-For entry of a trusted proxy's
// client), e.g. for a service's own per-IP limits; "" outside the gateway.
func ClientIP(ctx context.Context) string {
	if info, ok := ctx.Value(infoKey{}).(*reqInfo); ok {
		return addrString(info.ip)
	}
	return ""
}

// serveHTTP is the outer middleware: request ID, recovery, the per-IP
// rate limit, request-line and header limits, CORS (preflights are
// answered here), route lookup with JSON 404/405, access log and metrics.
// Authentication, the class rate limit, content-type and body limits are
// per route (routeHandler) because they depend on the route.
func (g *Gateway) serveHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	id := r.Header.Get(HeaderRequestID)
	if !saneRequestID(id) {
		id = newRequestID()
	}
	w.Header().Set(HeaderRequestID, id)
	info := &reqInfo{id: id, ip: g.edge.clientIP(r), peer: r.RemoteAddr, raw: w, member: g.peerRequest(r)}
	r = r.WithContext(context.WithValue(r.Context(), infoKey{}, info))
	if r.TLS == nil && g.edge.forwardedTLS(r) {
		r = r.WithContext(httpapi.WithSecure(r.Context()))
	}
	if peer, _ := parseAddr(r.RemoteAddr); info.ip.IsValid() && info.ip != peer {
		// Behind a trusted proxy, handlers see the client as RemoteAddr
		// (e.g. the auth service's per-IP login limits); the port is unknown.
		r.RemoteAddr = net.JoinHostPort(info.ip.String(), "0")
	}
	sw := &statusWriter{ResponseWriter: w}
	info.sw = sw
	if g.cfg.WriteTimeout == 0 && r.ProtoMajor == 1 {
		// What an earlier answer on this connection left (limitWrites):
		// net/http sets write deadlines only with its own WriteTimeout.
		_ = http.NewResponseController(w).SetWriteDeadline(time.Time{})
	}
	if hasBody(r) {
		// Before anything can answer: net/http reads what is left of a
		// body before it writes an answer (a 401, a 429), as a handler does.
		info.body = newTimedBody(r.Body, http.NewResponseController(w), g.cfg.BodyTimeout, r.ProtoMajor >= 2)
		r.Body = info.body
	}

	h, pattern := g.mux.Handler(r)
	route := routeLabel(pattern)

	defer func() {
		v := recover()
		abort := v == http.ErrAbortHandler
		if v != nil && !abort {
			g.log.Error("http: handler panic", "method", r.Method, "route", route, "request_id", id,
				"panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			switch {
			case sw.hijacked: // the connection belongs to the handler now
			case sw.status == 0:
				httpapi.WriteError(sw, httpapi.Errorf(http.StatusInternalServerError, httpapi.CodeInternal, "internal error"))
			default:
				// The response was already under way: abort the connection
				// rather than let the client take a truncated body for a
				// success. net/http does not log ErrAbortHandler.
				abort = true
			}
		}
		g.observe(r, sw, info, route, start, v != nil)
		if abort {
			panic(http.ErrAbortHandler)
		}
	}()

	// CORS headers first, so that a browser can read even a 429.
	g.edge.corsHeaders(sw.Header(), r.Header.Get("Origin"))
	// Health checks skip the per-IP bucket: a load balancer or kubelet
	// often shares its address with client traffic (haproxy in TCP mode,
	// SNAT), and a 429 there would take a healthy node out of service or
	// restart it. They cost next to nothing and take no token; /metrics
	// stays limited.
	// A member's own request (peerRequest) skips it too: the user it
	// serves was charged on the node they asked, and every user reading
	// through that node would share its address's bucket here.
	if !isHealthCheck(pattern) && info.member == "" {
		if ok, retry := g.edge.perIP.Allow(ratelimit.IPKey(info.ip)); !ok {
			g.rateLimited(sw, ClassAll, "ip", retry, "too many requests from your address")
			return
		}
	}
	// A member's own request may pass a client's request on (a media
	// download through a node that does not hold the file) that its node
	// checked, with fields of its own (the request ID, the hop and peer
	// marks): counted again here, a client's 100 fields were refused 431.
	// (net/http's own cap on the header bytes still applies.)
	if info.member == "" {
		if err := g.checkRequest(r, pattern); err != nil {
			httpapi.WriteError(sw, err)
			return
		}
	}
	// Set after the header limits, which count the client's fields only.
	r.Header.Set(HeaderRequestID, id)
	if info.member == "" {
		r.Header.Del(httpapi.HeaderPeer) // services see it only from a member
	}
	if g.held.Load() && !isProbe(pattern) && !servedWhileHeld(pattern) {
		httpapi.WriteError(sw, &httpapi.Error{Status: http.StatusServiceUnavailable, Code: httpapi.CodeUnavailable,
			Message: "this node is starting (waiting for its cluster); retry", RetryAfter: time.Second})
		return
	}
	if isPreflight(r) {
		route = g.preflight(sw, r)
		return
	}
	if pattern == "" {
		// No route: the mux's handler answers 404, 405 (with Allow) or a
		// path-cleaning redirect; turn its plain-text errors into JSON.
		h = jsonErrors(h)
	} else {
		h = g.mux // serve through the mux so r.PathValue works
	}
	h.ServeHTTP(sw, r)
}

// peerRequest is the name of the cluster member whose own request r is,
// or "": r names the member in httpapi.HeaderPeer, its connection comes
// from that member's address (Deps.Peer; a TCP source address cannot be
// forged the way a header can), and it passes on no one else's request
// (no X-Forwarded-For or Forwarded: a proxy on a member's address that
// forwards a client's request says so, and a trusted proxy's client is
// not the member).
func (g *Gateway) peerRequest(r *http.Request) string {
	node := r.Header.Get(httpapi.HeaderPeer)
	if g.peer == nil || node == "" || len(r.Header.Values(httpapi.HeaderPeer)) != 1 ||
		len(r.Header.Values("X-Forwarded-For")) > 0 || len(r.Header.Values("Forwarded")) > 0 {
		return ""
	}
	addr, ok := parseAddr(r.RemoteAddr)
	if !ok || !g.peer(addr, node) {
		return ""
	}
	return node
}

// isHealthCheck tells the mux patterns of /healthz and /readyz.
func isHealthCheck(pattern string) bool {
	return pattern == "GET /healthz" || pattern == "GET /readyz"
}

// isProbe tells the mux patterns of /healthz, /readyz and /metrics.
func isProbe(pattern string) bool {
	return isHealthCheck(pattern) || pattern == "GET /metrics"
}

// servedWhileHeld: the routes a node waiting for its cluster serves
// besides the probes. GET /cluster/status (admin: `edgechat cluster
// status`) is how an operator sees why a cluster does not form; it reads
// only this node's Raft state.
func servedWhileHeld(pattern string) bool {
	return pattern == "GET /cluster/status"
}

// routeHandler wraps a service route: authentication, the class rate
// limit (per user; per client IP on public routes; none for a member's
// own request), the admin check, the content type and the body limit.
func (g *Gateway) routeHandler(rt httpapi.Route, class string, lim *ratelimit.Limiter) http.Handler {
	maxBody := rt.MaxBody
	if maxBody == 0 {
		maxBody = httpapi.DefaultMaxBody
	}
	checkType := class != httpapi.ClassUpload
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		info, _ := r.Context().Value(infoKey{}).(*reqInfo)
		if info == nil { // served by a mux outside serveHTTP: keep the invariants below simple
			info = &reqInfo{raw: w}
		}
		if info.sw != nil && g.cfg.WriteTimeout == 0 {
			info.sw.limitWrites(http.NewResponseController(info.raw), g.cfg.WriteIdleTimeout, r.ProtoMajor >= 2)
			defer info.sw.lastWrite() // net/http's own, once the handler is done
		}
		var p httpapi.Principal
		if !rt.Public {
			var err error
			if p, err = g.authenticate(r); err != nil {
				writeAuthError(w, err)
				return
			}
			info.user = p.UserID
			r = r.WithContext(httpapi.WithPrincipal(r.Context(), p))
		}
		// Services see the verified principal, never the raw token (a
		// public webhook that checks its own shared secret aside).
		if !rt.Public || !rt.OwnAuth {
			r.Header.Del("Authorization")
		}

		key, scope := "u/"+p.UserID, "user"
		if rt.Public {
			key, scope = ratelimit.IPKey(info.ip), "ip"
		}
		// A member's own request (peerRequest) is not a client's: the user
		// it serves was charged on the node they asked, and a read another
		// region asked for comes as the media's uploader.
		if info.member == "" {
			if ok, retry := lim.Allow(key); !ok {
				g.rateLimited(w, class, scope, retry, "too many "+class+" requests")
				return
			}
		}
		if rt.Admin && !p.Admin {
			httpapi.WriteError(w, httpapi.Errorf(http.StatusForbidden, httpapi.CodeForbidden, "this endpoint is for admins"))
			return
		}

		if r.ContentLength > maxBody && !rt.OwnBodyLimit {
			httpapi.WriteError(w, httpapi.Errorf(http.StatusRequestEntityTooLarge, httpapi.CodeTooLarge,
				"request body of %d bytes is over the %d byte limit", r.ContentLength, maxBody))
			return
		}
		if checkType && hasBody(r) && !isJSON(r.Header.Get("Content-Type")) {
			httpapi.WriteError(w, httpapi.Errorf(http.StatusUnsupportedMediaType, httpapi.CodeUnsupported,
				"content type must be application/json"))
			return
		}
		if class == httpapi.ClassUpload && info.body != nil {
			info.body.uploading() // long, but never silent for long
		}
		if r.Body != nil && r.Body != http.NoBody {
			// The server's own writer lets net/http close the connection
			// after an oversized body.
			r.Body = http.MaxBytesReader(info.raw, r.Body, maxBody)
		}
		if rt.CatchUp && g.barrier != nil && !g.catchUpFirst(w, r) {
			return
		}
		if g.barrier != nil && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
			g.serveReadingAgain(rt.Handler, w, r)
			return
		}
		if finishesWithoutClient(r.Method, class) {
			ctx, stop := outlastClient(r.Context())
			defer stop()
			r = r.WithContext(ctx)
		}
		rt.Handler(w, r)
	})
}

// writeFinishTimeout bounds how long a change goes on after its client
// went away (finishesWithoutClient).
const writeFinishTimeout = 30 * time.Second

// outlastClient is a context for the request of parent that ends
// writeFinishTimeout after parent does (the client went away), not at
// once, or when stop is called (the handler returned).
func outlastClient(parent context.Context) (ctx context.Context, stop func()) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(parent))
	var timer *time.Timer
	var mu sync.Mutex
	unhook := context.AfterFunc(parent, func() {
		mu.Lock()
		timer = time.AfterFunc(writeFinishTimeout, cancel)
		mu.Unlock()
	})
	return ctx, func() {
		unhook()
		mu.Lock()
		if timer != nil {
			timer.Stop()
		}
		mu.Unlock()
		cancel()
	}
}

// finishesWithoutClient tells the requests whose handler runs on to its
// end when the client goes away (net/http then cancels the request's
// context): the changes. A change may commit although the wait for it
// was cut short; what the handler does after the commit (telling a
// group's members, closing the MQTT sessions a sign-out ended, removing
// push registrations) must not be skipped because the client, or a proxy
// in front, gave up. Reads stop at once; uploads too (their body is gone
// with the client).
func finishesWithoutClient(method, class string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return false
	}
	return class != httpapi.ClassUpload
}

var (
	errNoToken     = errors.New("missing bearer token")
	errBadAuthHdr  = errors.New("malformed Authorization header; want \"Bearer <token>\"")
	errBadToken    = errors.New("invalid or expired token")
	errNoPrincipal = errors.New("token names no user")
)

// authenticate verifies the bearer token of r.
func (g *Gateway) authenticate(r *http.Request) (wire.Principal, error) {
	vals := r.Header.Values("Authorization")
	if len(vals) == 0 {
		return wire.Principal{}, errNoToken
	}
	if len(vals) > 1 {
		return wire.Principal{}, errBadAuthHdr
	}
	scheme, tok, ok := strings.Cut(vals[0], " ")
	tok = strings.TrimSpace(tok)
	if !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" || strings.ContainsAny(tok, " \t") {
		return wire.Principal{}, errBadAuthHdr
	}
	p, err := g.verifier.VerifyAccessToken(tok)
	if err != nil {
		if errors.Is(err, wire.ErrUnavailable) {
			return wire.Principal{}, err
		}
		g.log.Debug("http: token rejected", "request_id", RequestID(r.Context()), "err", err)
		return wire.Principal{}, errBadToken
	}
	if p.UserID == "" {
		return wire.Principal{}, errNoPrincipal
	}
	return p, nil
}

func writeAuthError(w http.ResponseWriter, err error) {
	if errors.Is(err, wire.ErrUnavailable) {
		httpapi.WriteError(w, &httpapi.Error{Status: http.StatusServiceUnavailable, Code: httpapi.CodeUnavailable,
			Message: "cannot verify tokens right now; retry", RetryAfter: time.Second})
		return
	}
	challenge := httpapi.BearerChallenge
	if !errors.Is(err, errNoToken) {
		challenge += `, error="invalid_token"` // RFC 6750 §3.1
	}
	w.Header().Set("WWW-Authenticate", challenge)
	httpapi.WriteError(w, httpapi.Errorf(http.StatusUnauthorized, httpapi.CodeUnauthorized, "%v", err))
}

// observe writes the access-log line and the metrics of one request.
func (g *Gateway) observe(r *http.Request, sw *statusWriter, info *reqInfo, route string, start time.Time, panicked bool) {
	elapsed := time.Since(start)
	status := sw.status
	switch {
	case status == 0 && sw.hijacked:
		status = http.StatusSwitchingProtocols
	case status == 0:
		status = http.StatusOK // the handler wrote nothing: net/http sends 200
	}
	method := methodLabel(r.Method)
	g.mRequests.WithLabelValues(route, method, strconv.Itoa(status)).Inc()
	if !sw.hijacked { // a WebSocket's lifetime is not a latency
		g.mSeconds.WithLabelValues(route).Observe(elapsed.Seconds())
	}
	if status == http.StatusNotModified {
		g.mNotModified.WithLabelValues(route).Inc()
	}

	level := slog.LevelInfo
	switch {
	case route == "/readyz" && status == http.StatusServiceUnavailable && !panicked:
		// Probes every few seconds would drown the log while a node is
		// not ready: noteReadiness logs the change once.
		level = slog.LevelDebug
	case status >= 500 || panicked:
		level = slog.LevelError
	case route == "/healthz" || route == "/readyz" || route == "/metrics":
		level = slog.LevelDebug // probes every few seconds would drown the log
	}
	path := r.URL.Path
	if len(path) > maxLoggedPath {
		path = cutPath(path)
	}
	attrs := []slog.Attr{
		slog.String("method", r.Method),
		slog.String("route", route),
		slog.String("path", path),
		slog.Int("status", status),
		slog.Duration("duration", elapsed),
		slog.String("user", info.user),
		slog.String("request_id", info.id),
		slog.Int64("bytes", sw.bytes),
		slog.String("remote", info.peer),
		slog.String("client_ip", addrString(info.ip)),
	}
	if len(path) != len(r.URL.Path) {
		attrs = append(attrs, slog.Int("path_bytes", len(r.URL.Path)))
	}
	if info.member != "" {
		attrs = append(attrs, slog.String("member", info.member)) // not rate limited: a member's own request
	}
	if sw.err != nil {
		attrs = append(attrs, slog.String("error", sw.err.Error()))
	}
	g.log.LogAttrs(r.Context(), level, "http request", attrs...)
}

// maxLoggedPath bounds the path on an access-log line: the longest the
// API serves is some 150 bytes, while a client may send one up to
// net/http's limit on the request's head (some 80 KiB), and every request
// is logged at Info, those the per-IP bucket refuses too.
const maxLoggedPath = 256

// cutPath is the first maxLoggedPath bytes of path, whole characters.
func cutPath(path string) string {
	n := maxLoggedPath
	for i := 0; i < utf8.UTFMax-1 && n > 0 && !utf8.RuneStart(path[n]); i++ {
		n-- // not within a character
	}
	return path[:n]
}

// routeLabel is the route of a mux pattern without its method, e.g.
// "/presence/{uid}"; unmatched requests share one label so that scanners
// cannot blow up the metric's cardinality.
func routeLabel(pattern string) string {
	if pattern == "" {
		return "unmatched"
	}
	if m, rest, ok := strings.Cut(pattern, " "); ok && !strings.Contains(m, "/") {
		return strings.TrimSpace(rest)
	}
	return pattern
}

func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions:
		return m
	}
	return "OTHER"
}

// saneRequestID accepts IDs from a proxy in front of us: 1..128 characters
// of letters, digits and -_.:  — nothing that could forge log lines.
func saneRequestID(s string) bool {
	if s == "" || len(s) > maxRequestIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' || c == ':') {
			return false
		}
	}
	return true
}

func newRequestID() string {
	var b [12]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand, Go 1.24+)
	return hex.EncodeToString(b[:])
}

// statusWriter records the status and size of a response. It passes
// Flush, Hijack and ReadFrom through and unwraps for
// http.ResponseController, so streaming, sendfile and WebSocket upgrades
// work behind it.
type statusWriter struct {
	http.ResponseWriter
	status   int
	bytes    int64
	hijacked bool
	err      error // the cause of a 500 or 507 (httpapi.WriteError), for the log line

	// A route's answer (limitWrites): each write must go out within
	// writeIdle, set again before the writes (at most every writeIdle/8).
	rc        *http.ResponseController
	writeIdle time.Duration
	deadline  time.Time // the write deadline set last
	// h2: the answer goes over HTTP/2, where a stream's write deadline
	// is a timer that resets the stream when it fires, whether or not a
	// write waits (HTTP/1's is the connection's, felt only by a write):
	// it is set for each write and lifted once the write is done, so
	// that a handler that takes a while before (or between) its writes
	// is not cut off.
	h2 bool
}

// limitWrites bounds each write of the answer to writeIdle from now on
// (Config.WriteIdleTimeout): a client that stops reading (its TCP window
// shut) held the handler, its connection and what it served (a media
// object open) for good, as nothing set a write deadline.
func (w *statusWriter) limitWrites(rc *http.ResponseController, writeIdle time.Duration, h2 bool) {
	w.rc, w.writeIdle, w.h2 = rc, writeIdle, h2
	if !h2 {
		w.moveDeadline()
	}
}

// wrote lifts an HTTP/2 answer's write deadline once a write is done
// (see h2); the next write sets it again.
func (w *statusWriter) wrote() {
	if w.h2 && w.rc != nil && !w.deadline.IsZero() {
		w.deadline = time.Time{}
		_ = w.rc.SetWriteDeadline(time.Time{})
	}
}

// moveDeadline gives the next write writeIdle from now.
func (w *statusWriter) moveDeadline() {
	if w.rc == nil {
		return
	}
	now := time.Now()
	if d := w.deadline.Sub(now); d > w.writeIdle-w.writeIdle/8 {
		return // set a moment ago
	}
	w.deadline = now.Add(w.writeIdle)
	_ = w.rc.SetWriteDeadline(w.deadline)
}

// lastWrite bounds what net/http writes once the handler has returned
// (the buffered answer, the end of a chunked one); the next request on
// the connection lifts it.
func (w *statusWriter) lastWrite() {
	if w.rc != nil {
		w.deadline = time.Time{}
		w.moveDeadline()
	}
}

// RecordError keeps the cause of an error answer the client sees only as
// "internal error" (httpapi.ErrorRecorder).
func (w *statusWriter) RecordError(err error) { w.err = err }

func (w *statusWriter) WriteHeader(code int) {
	w.moveDeadline()
	if w.status == 0 && (code >= 200 || code == http.StatusSwitchingProtocols) {
		w.status = code // 1xx informational headers are not the final status
	}
	w.ResponseWriter.WriteHeader(code)
	w.wrote()
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	if w.rc == nil {
		n, err := w.ResponseWriter.Write(b)
		w.bytes += int64(n)
		return n, err
	}
	// In pieces, the deadline moved before each: one Write of a whole
	// answer (httpapi.WriteJSON's long list) otherwise had writeIdle for
	// all of it, and a client reading it slowly but steadily was cut off.
	defer w.wrote()
	var n int
	for {
		w.moveDeadline()
		piece := b[n:min(len(b), n+writePiece)]
		m, err := w.ResponseWriter.Write(piece)
		n += m
		w.bytes += int64(m)
		if err == nil && m < len(piece) {
			err = io.ErrShortWrite
		}
		if err != nil || n == len(b) {
			return n, err
		}
	}
}

// writePiece is the most of an answer written under one write deadline.
const writePiece = 32 << 10

func (w *statusWriter) ReadFrom(r io.Reader) (int64, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	if w.rc != nil {
		// Through Write (no sendfile then): each piece within writeIdle,
		// its deadline set once the source gave it, so that a source that
		// is slow (a peer, an object store) is not taken for a client that
		// stopped reading, and lifted after it over HTTP/2.
		return io.Copy(struct{ io.Writer }{w}, r)
	}
	n, err := io.Copy(w.ResponseWriter, r) // uses the server's ReadFrom (sendfile) when it has one
	w.bytes += n
	return n, err
}

func (w *statusWriter) Flush() {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	w.moveDeadline()
	_ = http.NewResponseController(w.ResponseWriter).Flush()
	w.wrote()
}

func (w *statusWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, rw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err == nil {
		w.hijacked = true
	}
	return c, rw, err
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

var (
	_ httpapi.ErrorRecorder = (*statusWriter)(nil)
	_ http.ResponseWriter   = (*statusWriter)(nil)
	_ http.Flusher          = (*statusWriter)(nil)
	_ http.Hijacker         = (*statusWriter)(nil)
	_ io.ReaderFrom         = (*statusWriter)(nil)
)

// jsonErrors rewrites the ServeMux's plain-text 404 and 405 answers as
// JSON errors (keeping Allow); anything else (redirects) passes through.
func jsonErrors(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(&errorRewriter{ResponseWriter: w}, r)
	})
}

type errorRewriter struct {
	http.ResponseWriter
	swallow bool
}

func (e *errorRewriter) WriteHeader(code int) {
	var err *httpapi.Error
	switch code {
	case http.StatusNotFound:
		err = httpapi.Errorf(code, httpapi.CodeNotFound, "no such endpoint")
	case http.StatusMethodNotAllowed:
		err = httpapi.Errorf(code, httpapi.CodeMethodNotAllow, "method not allowed; allowed: %s", e.Header().Get("Allow"))
	default:
		e.ResponseWriter.WriteHeader(code)
		return
	}
	e.swallow = true
	httpapi.WriteError(e.ResponseWriter, err)
}

func (e *errorRewriter) Write(b []byte) (int, error) {
	if e.swallow {
		return len(b), nil
	}
	return e.ResponseWriter.Write(b)
}
