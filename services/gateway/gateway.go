// Package gateway is edgechat's HTTP front door: one listener (TLS with
// HTTP/2 when configured) that routes to the services' endpoints with Go's
// pattern ServeMux and wraps every request in the same edge middleware:
// panic recovery, request IDs, a token bucket per client IP (before
// anything else, so floods of bad tokens are throttled too), request-line
// and header limits, time limits on a request's body and on each write
// of its answer (slowbody.go, statusWriter), CORS for configured web origins, authentication (a
// bearer token is verified once, here, and services see only the verified
// principal), the admin role check, a token bucket per user and route
// class, content-type checks and body limits, an access-log line and
// Prometheus metrics. Errors, including 404, 405 and 429, are JSON. It
// also serves /healthz, /readyz and /metrics.
package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/edgechat/edgechat/internal/httpapi"
	"github.com/edgechat/edgechat/internal/wire"
)

// Verifier checks an access token (implemented by the auth service).
// Errors wrapping wire.ErrUnavailable become 503 (the verifier could not
// decide, e.g. an OIDC key set is unreachable); any other error is 401.
type Verifier interface {
	VerifyAccessToken(token string) (wire.Principal, error)
}

// Defaults.
const (
	DefaultAddr              = ":8080"
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultIdleTimeout       = 2 * time.Minute
	DefaultMaxHeaderBytes    = 64 << 10
	DefaultShutdownTimeout   = 10 * time.Second
	DefaultBodyTimeout       = 30 * time.Second
	DefaultWriteIdleTimeout  = 30 * time.Second
)

// Errors.
var (
	ErrConfig  = errors.New("gateway: invalid config")
	ErrRunning = errors.New("gateway: already running")
)

// Config is the listener's configuration. Zero values take the defaults.
type Config struct {
	Addr string // host:port; default ":8080"; port 0 picks a free port
	// TLS, when set, serves HTTPS with HTTP/2; it must carry a certificate
	// (Certificates, GetCertificate or GetConfigForClient). MinVersion is
	// raised to TLS 1.2.
	TLS *tls.Config

	ReadHeaderTimeout time.Duration // default 10s (slowloris)
	// ReadTimeout and WriteTimeout cover whole requests; they default to
	// none because uploads, downloads and WebSocket upgrades are long.
	ReadTimeout  time.Duration
	WriteTimeout time.Duration
	IdleTimeout  time.Duration // keep-alive idle; default 2m
	// WriteIdleTimeout bounds each write of a route's answer to its client
	// (a client that stops reading, its TCP window shut): a write (a piece
	// of 32 KiB at most, however much the handler wrote at once) that has
	// not gone out after it fails, and the connection is closed (over
	// HTTP/2, the stream is reset). Only writes count: a handler may take
	// longer before or between its writes. Default 30s. Not applied when
	// WriteTimeout is set (that bounds the whole answer), nor to raw
	// handlers (Handle: WebSockets).
	WriteIdleTimeout time.Duration
	// BodyTimeout bounds how long a request body takes to arrive (slow
	// POST): a body must be in within it of the request's headers, an
	// upload's (class "upload") may not go that long without a byte.
	// Over it the body's reader fails (408 request_timeout from
	// httpapi.DecodeJSON) and the connection is closed. Default 30s.
	BodyTimeout time.Duration
	// MaxHeaderBytes limits the request headers (names and values): over
	// it a request gets a JSON 431. Default 64 KiB. (net/http itself cuts
	// off at this plus 16 KiB, with a plain-text 431.)
	MaxHeaderBytes  int
	MaxHeaderFields int           // header fields per request; default 100 (JSON 431 over it)
	MaxQueryBytes   int           // raw query string; default 2 KiB (JSON 414 over it)
	ShutdownTimeout time.Duration // graceful drain on Run's exit; default 10s

	// PerIP is the token bucket of every request per client IP (IPv6: per
	// /64), checked before authentication. Zero: 50/s, burst 100.
	PerIP RateSpec
	// RateLimits are the token buckets per route class (httpapi.Route.Class;
	// "read" when empty, "admin" for admin routes), per authenticated user
	// or, on public routes, per client IP. Classes not set here (or set to
	// the zero RateSpec) take DefaultRateLimits; a route of a class that has
	// no limit at all uses "read". A negative Rate means unlimited.
	RateLimits map[string]RateSpec
	// NoRateLimits turns every limiter off (benchmarks, load tests).
	NoRateLimits bool
	// RateLimitMaxKeys bounds the buckets each limiter keeps (LRU beyond
	// it); default 10,000.
	RateLimitMaxKeys int
	// TrustedProxies are the CIDRs (or single IPs) of reverse proxies in
	// front of the gateway. Only for a peer in them is X-Forwarded-For read:
	// the client IP is then its right-most entry that is not a trusted
	// proxy. Otherwise the client IP is the peer's address.
	TrustedProxies []string
	// CORSOrigins are the web origins ("https://app.example.com", exact)
	// allowed to call the API from a browser; "*" allows any origin (then
	// without credentials). Other origins get no CORS headers.
	CORSOrigins []string
	// CORSAllowCredentials sends Access-Control-Allow-Credentials. The API
	// authenticates with bearer tokens, not cookies, so it is rarely needed.
	CORSAllowCredentials bool
}

// Deps are the collaborators. Verifier is required.
type Deps struct {
	Verifier Verifier
	Ready    func() error // nil error = ready; nil func = always ready
	// Warnings are what a ready node reports in /readyz's answer for its
	// operators (a backup overdue); they do not make it unready. Nil: none.
	Warnings   func() []string
	Logger     *slog.Logger
	Registerer prometheus.Registerer // nil: metrics are not registered
	Gatherer   prometheus.Gatherer   // served at /metrics; nil: no /metrics
	Now        func() time.Time      // the rate limiters' clock; nil: time.Now
	// PeerOrigin tells whether a browser Origin is one of the cluster's
	// own nodes (a page another member served, reaching this node when
	// its own went away): allowed like CORSOrigins. Nil: none.
	PeerOrigin func(origin string) bool
	// ReadBarrier waits until this node has applied every write the
	// cluster committed before the call (cluster.Raft.ReadBarrier): a
	// read answered 404 runs again after it (catchup.go). Nil: a 404
	// stands (a single node).
	ReadBarrier func(ctx context.Context) error
	// Peer tells whether addr is an address of the cluster member named
	// node. A request that names a member in httpapi.HeaderPeer and comes
	// straight from that member's address (the connection's, which a
	// client cannot forge, with no X-Forwarded-For or Forwarded: nobody
	// else's request passed on) is the cluster's own traffic: a media
	// read for a user that member already charged, a segment copy. It
	// skips the per-IP bucket and the class bucket; authentication and
	// everything else apply as to any request. The rule is by address: a
	// client on a member's address can pass for it. Nil: no request is a
	// peer's (a single node).
	Peer func(addr netip.Addr, node string) bool
}

// Gateway is the HTTP server.
type Gateway struct {
	cfg      Config
	log      *slog.Logger
	verifier Verifier
	ready    func() error
	warnings func() []string
	ln       net.Listener
	srv      *http.Server
	mux      *http.ServeMux
	handler  http.Handler
	scheme   string
	running  atomic.Bool
	held     atomic.Bool // Hold: only the probes are served (a node waiting for its cluster)
	edge     *edge

	routesMu sync.RWMutex
	mounted  map[string]struct{} // mux patterns of Mount's routes, for preflights
	methods  []string            // the distinct methods of mounted routes
	raw      []string            // patterns of Handle's raw handlers
	maxQuery map[string]int      // mux patterns of routes with their own query limit (Route.MaxQuery)

	mRequests    *prometheus.CounterVec
	mSeconds     *prometheus.HistogramVec
	mRateLimited *prometheus.CounterVec
	mNotModified *prometheus.CounterVec
	mReadAgain   prometheus.Counter

	barrier func(ctx context.Context) error // Deps.ReadBarrier
	peer    func(netip.Addr, string) bool   // Deps.Peer

	// notReady is what the last /readyz found ("" ready), so that a
	// change is logged once rather than every probe.
	readyMu  sync.Mutex
	notReady string
}

// New validates cfg, binds the listener and mounts /healthz, /readyz and
// /metrics. Run serves; Close releases the listener if Run never runs.
func New(cfg Config, deps Deps) (*Gateway, error) {
	if cfg.Addr == "" {
		cfg.Addr = DefaultAddr
	}
	if cfg.ReadHeaderTimeout == 0 {
		cfg.ReadHeaderTimeout = DefaultReadHeaderTimeout
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.MaxHeaderBytes == 0 {
		cfg.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if cfg.ShutdownTimeout == 0 {
		cfg.ShutdownTimeout = DefaultShutdownTimeout
	}
	if cfg.BodyTimeout == 0 {
		cfg.BodyTimeout = DefaultBodyTimeout
	}
	if cfg.WriteIdleTimeout == 0 {
		cfg.WriteIdleTimeout = DefaultWriteIdleTimeout
	}
	if cfg.ReadHeaderTimeout < 0 || cfg.ReadTimeout < 0 || cfg.WriteTimeout < 0 || cfg.IdleTimeout < 0 ||
		cfg.ShutdownTimeout < 0 || cfg.MaxHeaderBytes < 0 || cfg.BodyTimeout < 0 || cfg.WriteIdleTimeout < 0 {
		return nil, fmt.Errorf("%w: negative timeout or size", ErrConfig)
	}
	if deps.Verifier == nil {
		return nil, fmt.Errorf("%w: no token verifier", ErrConfig)
	}
	edge, err := newEdge(&cfg, deps.Now)
	if err != nil {
		return nil, err
	}
	if deps.PeerOrigin != nil {
		edge.peerOrigin, edge.corsOn = deps.PeerOrigin, true
	}
	scheme := "http"
	if cfg.TLS != nil {
		t := cfg.TLS.Clone() // never mutate the caller's config
		if len(t.Certificates) == 0 && t.GetCertificate == nil && t.GetConfigForClient == nil {
			return nil, fmt.Errorf("%w: TLS config has no certificate", ErrConfig)
		}
		if t.MinVersion < tls.VersionTLS12 {
			t.MinVersion = tls.VersionTLS12
		}
		// The server's ALPN preference decides: h2 first, whatever order
		// the caller listed protocols in.
		t.NextProtos = append([]string{"h2", "http/1.1"}, slices.DeleteFunc(slices.Clone(t.NextProtos),
			func(p string) bool { return p == "h2" || p == "http/1.1" })...)
		cfg.TLS = t
		scheme = "https"
	}
	g := &Gateway{
		cfg:      cfg,
		log:      deps.Logger,
		verifier: deps.Verifier,
		ready:    deps.Ready,
		warnings: deps.Warnings,
		mux:      http.NewServeMux(),
		scheme:   scheme,
		edge:     edge,
		mounted:  map[string]struct{}{},
		maxQuery: map[string]int{},
		barrier:  deps.ReadBarrier,
		peer:     deps.Peer,
		mReadAgain: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgechat_http_reads_again_total",
			Help: "Reads answered 404 that ran again once this node had applied what the cluster committed before them.",
		}),
		mRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgechat_http_requests_total",
			Help: "HTTP requests served, by route pattern, method and status.",
		}, []string{"route", "method", "status"}),
		mSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "edgechat_http_request_seconds",
			Help:    "HTTP request latency by route pattern (hijacked connections such as WebSockets are not observed).",
			Buckets: prometheus.DefBuckets,
		}, []string{"route"}),
		mRateLimited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgechat_http_rate_limited_total",
			Help: "HTTP requests refused with 429, by route class (\"all\" for the per-IP bucket of every request) and scope (ip or user).",
		}, []string{"class", "scope"}),
		mNotModified: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgechat_http_not_modified_total",
			Help: "Conditional requests answered 304 Not Modified, by route pattern.",
		}, []string{"route"}),
	}
	if g.log == nil {
		g.log = slog.Default()
	}
	if r := deps.Registerer; r != nil {
		for _, c := range []prometheus.Collector{g.mRequests, g.mSeconds, g.mRateLimited, g.mNotModified, g.mReadAgain} {
			if err := r.Register(c); err != nil {
				return nil, fmt.Errorf("gateway: registering metrics: %w", err)
			}
		}
	}
	g.handler = http.HandlerFunc(g.serveHTTP)
	g.Mount(
		httpapi.Route{Method: http.MethodGet, Pattern: "/healthz", Handler: handleHealthz, Public: true, Class: "probe"},
		httpapi.Route{Method: http.MethodGet, Pattern: "/readyz", Handler: g.handleReadyz, Public: true, Class: "probe"},
	)
	if deps.Gatherer != nil {
		metrics := promhttp.HandlerFor(deps.Gatherer, promhttp.HandlerOpts{
			ErrorLog: slog.NewLogLogger(g.log.Handler(), slog.LevelWarn),
		})
		g.Mount(httpapi.Route{Method: http.MethodGet, Pattern: "/metrics", Handler: metrics.ServeHTTP, Public: true, Class: "probe"})
	}

	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("gateway: listening on %s: %w", cfg.Addr, err)
	}
	g.ln = ln
	var protocols http.Protocols // HTTP/2 is negotiated by ALPN on TLS only
	protocols.SetHTTP1(true)
	protocols.SetHTTP2(true)
	g.srv = &http.Server{
		Protocols:         &protocols,
		Handler:           g.handler,
		TLSConfig:         cfg.TLS,
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		ReadTimeout:       cfg.ReadTimeout,
		WriteTimeout:      cfg.WriteTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    cfg.MaxHeaderBytes + headerBytesBackstop, // our own check answers in JSON first
		// net/http's own complaints (TLS handshake failures from scanners,
		// ...) are noise at Info level.
		ErrorLog: slog.NewLogLogger(g.log.Handler(), slog.LevelDebug),
	}
	return g, nil
}

// Mount registers service routes as "METHOD /pattern" on the ServeMux,
// each wrapped with authentication (unless Public), the admin check (when
// Admin), its class's rate limit, the JSON content-type check (unless of
// class "upload") and its body limit. A class with no configured limit
// is limited as "read" (and logged).
// A malformed route or a pattern conflict is a programming error and
// panics, as http.ServeMux does; nothing of a bad batch is mounted when a
// route fails validation.
func (g *Gateway) Mount(routes ...httpapi.Route) {
	for _, rt := range routes {
		if err := validRoute(rt); err != nil {
			panic(fmt.Sprintf("gateway: Mount: %v", err))
		}
	}
	for _, rt := range routes {
		class := rt.Class
		if class == "" {
			class = httpapi.ClassRead
			if rt.Admin {
				class = httpapi.ClassAdmin
			}
		}
		lim, ok := g.edge.classLimits[class]
		if !ok {
			g.log.Warn("gateway: route class has no rate limit; using read's", "method", rt.Method,
				"pattern", rt.Pattern, "class", class)
			class, lim = httpapi.ClassRead, g.edge.classLimits[httpapi.ClassRead]
		}
		pattern := rt.Method + " " + rt.Pattern
		g.mux.Handle(pattern, g.routeHandler(rt, class, lim))
		g.routesMu.Lock()
		g.mounted[pattern] = struct{}{}
		if rt.MaxQuery > 0 {
			g.maxQuery[pattern] = rt.MaxQuery
		}
		if !slices.Contains(g.methods, rt.Method) {
			g.methods = append(g.methods, rt.Method)
		}
		g.routesMu.Unlock()
	}
}

func validRoute(rt httpapi.Route) error {
	switch {
	case rt.Handler == nil:
		return fmt.Errorf("%s %s: nil handler", rt.Method, rt.Pattern)
	case rt.Method == "" || strings.ContainsAny(rt.Method, " \t/"):
		return fmt.Errorf("%q %s: bad method", rt.Method, rt.Pattern)
	case !strings.HasPrefix(rt.Pattern, "/"):
		return fmt.Errorf("%s %q: pattern must start with /", rt.Method, rt.Pattern)
	case rt.MaxBody < 0 || rt.MaxQuery < 0:
		return fmt.Errorf("%s %s: negative MaxBody or MaxQuery", rt.Method, rt.Pattern)
	case rt.Admin && rt.Public:
		return fmt.Errorf("%s %s: an admin route cannot be public", rt.Method, rt.Pattern)
	}
	return nil
}

// Handle registers a raw handler (any ServeMux pattern, e.g. "/mqtt" for
// MQTT over WebSocket). It gets request IDs, recovery, the per-IP rate
// limit, the query and header limits, CORS headers, logging and metrics,
// but no authentication, class rate limit, content-type check or body
// limit: the handler owns those (MQTT authenticates at CONNECT). The
// response writer supports http.Hijacker and http.ResponseController, so
// WebSocket upgrades work.
func (g *Gateway) Handle(pattern string, h http.Handler) {
	if h == nil {
		panic("gateway: Handle " + pattern + ": nil handler")
	}
	g.mux.Handle(pattern, h)
	g.routesMu.Lock()
	g.raw = append(g.raw, pattern)
	g.routesMu.Unlock()
}

// Patterns lists what is served, sorted: "METHOD /pattern" for each route
// of Mount (including /healthz, /readyz and /metrics) and the bare
// pattern of each raw handler of Handle (e.g. "/mqtt"). A test holds
// docs/protocol.md to it.
func (g *Gateway) Patterns() []string {
	g.routesMu.RLock()
	defer g.routesMu.RUnlock()
	out := make([]string, 0, len(g.mounted)+len(g.raw))
	for p := range g.mounted {
		out = append(out, p)
	}
	out = append(out, g.raw...)
	slices.Sort(out)
	return out
}

// Hold makes the gateway answer only /healthz, /readyz and /metrics, and
// every other request 503 unavailable with Retry-After, until Open: a
// node serves its health checks while it waits for its cluster, before
// its routes can work.
func (g *Gateway) Hold() { g.held.Store(true) }

// Open ends Hold: every route is served.
func (g *Gateway) Open() { g.held.Store(false) }

// Handler is the full middleware-wrapped handler (for tests and for
// serving on another listener).
func (g *Gateway) Handler() http.Handler { return g.handler }

// Addr is the bound host:port.
func (g *Gateway) Addr() string { return g.ln.Addr().String() }

// URL is the base URL of the gateway, e.g. "https://127.0.0.1:8080". A
// wildcard bind address is reported as 127.0.0.1, which is where a local
// client reaches it.
// ListenURL is the base URL of the address the gateway listens on, as
// bound (the host may be unspecified: [::] or 0.0.0.0).
func (g *Gateway) ListenURL() string { return g.scheme + "://" + g.Addr() }

func (g *Gateway) URL() string {
	host, port, err := net.SplitHostPort(g.Addr())
	if err != nil {
		return g.scheme + "://" + g.Addr()
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return g.scheme + "://" + net.JoinHostPort(host, port)
}

// Run serves until ctx is done, then shuts down gracefully: it stops
// accepting, lets in-flight requests finish for up to ShutdownTimeout and
// then closes what is left. Hijacked connections (WebSockets) are not
// tracked by net/http; their handlers must end them on their own ctx.
func (g *Gateway) Run(ctx context.Context) error {
	if !g.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	errc := make(chan error, 1)
	go func() {
		if g.cfg.TLS != nil {
			errc <- g.srv.ServeTLS(g.ln, "", "")
		} else {
			errc <- g.srv.Serve(g.ln)
		}
	}()
	g.log.Info("gateway: serving", "url", g.URL())
	select {
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) { // Close was called
			return nil
		}
		return fmt.Errorf("gateway: serving: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), g.cfg.ShutdownTimeout)
	defer cancel()
	if err := g.srv.Shutdown(sctx); err != nil {
		g.log.Warn("gateway: graceful shutdown incomplete, closing connections", "err", err)
		_ = g.srv.Close()
	}
	<-errc
	return nil
}

// Close releases the listener and all connections at once; for callers
// that built a Gateway but will not Run it (or must abort it).
func (g *Gateway) Close() error {
	err := g.srv.Close()
	if cerr := g.ln.Close(); cerr != nil && !errors.Is(cerr, net.ErrClosed) && err == nil {
		err = cerr
	}
	return err
}

func handleHealthz(w http.ResponseWriter, _ *http.Request) {
	httpapi.WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// noteReadiness logs a change of readiness (its reason included) as a
// probe finds it: the access log keeps probes at debug level, so an
// operator reads when and why a node stopped being ready, and when it
// came back, once each.
func (g *Gateway) noteReadiness(err error) {
	reason := ""
	if err != nil {
		reason = err.Error()
	}
	g.readyMu.Lock()
	was := g.notReady
	g.notReady = reason
	g.readyMu.Unlock()
	switch {
	case reason == was:
	case reason == "":
		g.log.Info("ready again", "was", was)
	default:
		g.log.Warn("not ready", "reason", reason)
	}
}

func (g *Gateway) handleReadyz(w http.ResponseWriter, _ *http.Request) {
	if g.ready != nil {
		err := g.ready()
		g.noteReadiness(err)
		if err != nil {
			httpapi.WriteError(w, httpapi.Errorf(http.StatusServiceUnavailable, httpapi.CodeUnavailable, "not ready: %v", err))
			return
		}
	}
	ans := map[string]any{"status": "ready"}
	if g.warnings != nil {
		if ws := g.warnings(); len(ws) > 0 {
			ans["warnings"] = ws
		}
	}
	httpapi.WriteJSON(w, http.StatusOK, ans)
}
