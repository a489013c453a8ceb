package gateway

import (
	"fmt"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/edgechat/edgechat/internal/httpapi"
	"github.com/edgechat/edgechat/internal/ratelimit"
)

// RateSpec is a token bucket: Rate requests per second, bursts of Burst.
// A negative Rate means unlimited.
type RateSpec = ratelimit.Spec

// Edge defaults.
const (
	DefaultPerIPRate    = 50
	DefaultPerIPBurst   = 100
	DefaultMaxQuery     = 2 << 10 // bytes of raw query string
	DefaultMaxHeaders   = 100     // header fields
	DefaultCORSMaxAge   = 600     // seconds a browser may cache a preflight
	headerBytesBackstop = 16 << 10
)

// ClassAll names the per-IP bucket every request passes before its route
// class (Config.PerIP): the class label of its refusals in
// edgechat_http_rate_limited_total, and its name in the node's
// --http-rate all=RATE/BURST.
const ClassAll = "all"

// DefaultRateLimits are the per-class limits (per user; per client IP on
// public routes) used for classes Config.RateLimits does not set.
func DefaultRateLimits() map[string]RateSpec {
	return map[string]RateSpec{
		httpapi.ClassAuth:   {Rate: 5, Burst: 10},
		httpapi.ClassRead:   {Rate: 20, Burst: 40},
		httpapi.ClassWrite:  {Rate: 10, Burst: 20},
		httpapi.ClassUpload: {Rate: 2, Burst: 5},
		httpapi.ClassAdmin:  {Rate: 5, Burst: 10},
		httpapi.ClassProbe:  ratelimit.Unlimited,
	}
}

const (
	corsAllowHeaders  = "Authorization, Content-Type, Idempotency-Key, If-None-Match, X-Request-ID"
	corsExposeHeaders = "ETag, Retry-After, X-Request-ID"
)

// edge is the part of the gateway's state New derives from the edge
// settings of Config; read-only after New.
type edge struct {
	perIP       *ratelimit.Limiter
	classLimits map[string]*ratelimit.Limiter
	proxies     []netip.Prefix
	corsOrigins map[string]bool
	corsAny     bool
	corsCreds   bool
	corsOn      bool
	peerOrigin  func(string) bool // the cluster's own nodes' origins; nil: none
}

func newEdge(cfg *Config, now func() time.Time) (*edge, error) {
	if cfg.MaxQueryBytes == 0 {
		cfg.MaxQueryBytes = DefaultMaxQuery
	}
	if cfg.MaxHeaderFields == 0 {
		cfg.MaxHeaderFields = DefaultMaxHeaders
	}
	if cfg.MaxQueryBytes < 0 || cfg.MaxHeaderFields < 0 || cfg.RateLimitMaxKeys < 0 {
		return nil, fmt.Errorf("%w: negative MaxQueryBytes, MaxHeaderFields or RateLimitMaxKeys", ErrConfig)
	}
	e := &edge{classLimits: map[string]*ratelimit.Limiter{}}

	limiter := func(name string, s RateSpec) (*ratelimit.Limiter, error) {
		if cfg.NoRateLimits {
			s = ratelimit.Unlimited
		}
		l, err := ratelimit.New(ratelimit.Config{Spec: s, MaxKeys: cfg.RateLimitMaxKeys, Now: now})
		if err != nil {
			return nil, fmt.Errorf("%w: rate limit %s: %w", ErrConfig, name, err)
		}
		return l, nil
	}
	perIP := cfg.PerIP
	if perIP.IsZero() {
		perIP = RateSpec{Rate: DefaultPerIPRate, Burst: DefaultPerIPBurst}
	}
	var err error
	if e.perIP, err = limiter("per IP", perIP); err != nil {
		return nil, err
	}
	specs := DefaultRateLimits()
	for class, s := range cfg.RateLimits {
		if class == "" {
			return nil, fmt.Errorf("%w: rate limit for an empty class name", ErrConfig)
		}
		if !s.IsZero() {
			specs[class] = s
		}
	}
	for class, s := range specs {
		if e.classLimits[class], err = limiter("class "+class, s); err != nil {
			return nil, err
		}
	}

	for _, p := range cfg.TrustedProxies {
		pfx, err := parsePrefix(p)
		if err != nil {
			return nil, fmt.Errorf("%w: trusted proxy %q: %w", ErrConfig, p, err)
		}
		e.proxies = append(e.proxies, pfx)
	}

	e.corsOrigins = map[string]bool{}
	e.corsCreds = cfg.CORSAllowCredentials
	for _, o := range cfg.CORSOrigins {
		if o == "*" {
			if cfg.CORSAllowCredentials {
				return nil, fmt.Errorf("%w: CORS origin * cannot be combined with credentials", ErrConfig)
			}
			e.corsAny = true
			continue
		}
		norm, err := normalizeOrigin(o)
		if err != nil {
			return nil, fmt.Errorf("%w: CORS origin %q: %w", ErrConfig, o, err)
		}
		e.corsOrigins[norm] = true
	}
	e.corsOn = e.corsAny || len(e.corsOrigins) > 0
	return e, nil
}

func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		if a := p.Addr(); a.Is4In6() {
			if p.Bits() < 96 {
				return netip.Prefix{}, fmt.Errorf("IPv4-mapped prefix shorter than /96")
			}
			return netip.PrefixFrom(a.Unmap(), p.Bits()-96).Masked(), nil
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// normalizeOrigin checks a configured web origin (scheme://host[:port],
// nothing else) and lower-cases it as browsers send it.
func normalizeOrigin(o string) (string, error) {
	u, err := url.Parse(o)
	if err != nil {
		return "", err
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return "", fmt.Errorf("want scheme://host[:port]")
	}
	return strings.ToLower(u.Scheme + "://" + u.Host), nil
}

// clientIP is the peer's address, or, when the peer is a trusted proxy,
// the right-most X-Forwarded-For entry that is not a trusted proxy (the
// entries left of it are whatever the client sent and prove nothing).
func (e *edge) clientIP(r *http.Request) netip.Addr {
	peer, ok := parseAddr(r.RemoteAddr)
	if !ok || !e.trusted(peer) {
		return peer
	}
	addr := peer
	vals := r.Header.Values("X-Forwarded-For")
	for i := len(vals) - 1; i >= 0; i-- {
		v := vals[i]
		for v != "" {
			var hop string
			if j := strings.LastIndexByte(v, ','); j >= 0 {
				hop, v = v[j+1:], v[:j]
			} else {
				hop, v = v, ""
			}
			hop = strings.TrimSpace(hop)
			if hop == "" {
				continue
			}
			a, ok := parseAddr(hop)
			if !ok { // garbage: trust nothing further left
				return addr
			}
			addr = a
			if !e.trusted(a) {
				return a
			}
		}
	}
	return addr // every hop is a trusted proxy: the left-most one
}

// forwardedTLS tells whether a trusted proxy says it received r over TLS
// (X-Forwarded-Proto: https, as the proxy nearest to this node set it).
func (e *edge) forwardedTLS(r *http.Request) bool {
	peer, ok := parseAddr(r.RemoteAddr)
	if !ok || !e.trusted(peer) {
		return false
	}
	vals := r.Header.Values("X-Forwarded-Proto")
	if len(vals) == 0 {
		return false
	}
	last := vals[len(vals)-1]
	if j := strings.LastIndexByte(last, ','); j >= 0 {
		last = last[j+1:]
	}
	return strings.EqualFold(strings.TrimSpace(last), "https")
}

func (e *edge) trusted(a netip.Addr) bool {
	for _, p := range e.proxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// parseAddr reads "ip", "ip:port" or "[ipv6]:port".
func parseAddr(s string) (netip.Addr, bool) {
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap().WithZone(""), true
	}
	if host, _, err := net.SplitHostPort(s); err == nil {
		if a, err := netip.ParseAddr(host); err == nil {
			return a.Unmap().WithZone(""), true
		}
	}
	return netip.Addr{}, false
}

// corsHeaders adds the CORS headers of an actual (non-preflight) response
// and reports whether the origin is allowed.
func (e *edge) corsHeaders(h http.Header, origin string) bool {
	if !e.corsOn {
		return false
	}
	h.Add("Vary", "Origin") // the answer depends on Origin, even when refused
	if !e.originAllowed(origin) {
		return false
	}
	e.allowOrigin(h, origin)
	h.Set("Access-Control-Expose-Headers", corsExposeHeaders)
	return true
}

func (e *edge) originAllowed(origin string) bool {
	if origin == "" || origin == "null" {
		return false
	}
	return e.corsAny || e.corsOrigins[origin] || e.peerOrigin != nil && e.peerOrigin(origin)
}

func (e *edge) allowOrigin(h http.Header, origin string) {
	if e.corsAny {
		h.Set("Access-Control-Allow-Origin", "*")
		return
	}
	h.Set("Access-Control-Allow-Origin", origin) // only ever a configured origin
	if e.corsCreds {
		h.Set("Access-Control-Allow-Credentials", "true")
	}
}

func isPreflight(r *http.Request) bool {
	return r.Method == http.MethodOptions && r.Header.Get("Origin") != "" &&
		r.Header.Get("Access-Control-Request-Method") != ""
}

// preflight answers a CORS preflight for a mounted route and returns the
// route's label for metrics.
func (g *Gateway) preflight(w http.ResponseWriter, r *http.Request) string {
	methods, pattern := g.routeMethods(r)
	if len(methods) == 0 {
		httpapi.WriteError(w, httpapi.Errorf(http.StatusNotFound, httpapi.CodeNotFound, "no such endpoint"))
		return "unmatched"
	}
	route := routeLabel(pattern)
	origin := r.Header.Get("Origin")
	if !g.edge.originAllowed(origin) {
		httpapi.WriteError(w, httpapi.Errorf(http.StatusForbidden, httpapi.CodeForbidden, "origin not allowed"))
		return route
	}
	h := w.Header()
	g.edge.allowOrigin(h, origin)
	h.Set("Access-Control-Allow-Methods", strings.Join(methods, ", "))
	h.Set("Access-Control-Allow-Headers", corsAllowHeaders)
	h.Set("Access-Control-Max-Age", strconv.Itoa(DefaultCORSMaxAge))
	h.Add("Vary", "Access-Control-Request-Method")
	h.Add("Vary", "Access-Control-Request-Headers")
	w.WriteHeader(http.StatusNoContent)
	return route
}

// routeMethods lists the methods mounted for r's path (in mount order)
// and the pattern of the first.
func (g *Gateway) routeMethods(r *http.Request) ([]string, string) {
	g.routesMu.RLock()
	defer g.routesMu.RUnlock()
	var methods []string
	var first string
	probe := new(http.Request)
	for _, m := range g.methods {
		*probe = *r
		probe.Method = m
		_, pattern := g.mux.Handler(probe)
		if _, ok := g.mounted[pattern]; ok {
			methods = append(methods, m)
			if first == "" {
				first = pattern
			}
		}
	}
	return methods, first
}

// checkRequest enforces the limits on the request line and headers that
// apply to every request (the query limit raised for a route of pattern
// with its own MaxQuery), as JSON errors. (net/http refuses headers over
// MaxHeaderBytes + 16 KiB itself, before any handler, with a plain-text
// 431 over HTTP/1.1 and an HTML one over HTTP/2: a listener wrapper
// could rewrite the plain-text one only on connections without TLS, so
// protocol.md documents the exception instead; TestHeadersOverTheLimitAnswer431.)
func (g *Gateway) checkRequest(r *http.Request, pattern string) error {
	maxQuery := g.cfg.MaxQueryBytes
	g.routesMu.RLock()
	if m, ok := g.maxQuery[pattern]; ok && m > maxQuery {
		maxQuery = m
	}
	g.routesMu.RUnlock()
	if n := len(r.URL.RawQuery); n > maxQuery {
		return httpapi.Errorf(http.StatusRequestURITooLong, httpapi.CodeURITooLong,
			"query string of %d bytes is over the %d byte limit", n, maxQuery)
	}
	fields, size := 0, 0
	for k, vs := range r.Header {
		fields += len(vs)
		for _, v := range vs {
			size += len(k) + len(v) + 4 // ": " and CRLF
		}
	}
	if fields > g.cfg.MaxHeaderFields {
		return httpapi.Errorf(http.StatusRequestHeaderFieldsTooLarge, httpapi.CodeHeadersTooBig,
			"%d header fields, over the limit of %d", fields, g.cfg.MaxHeaderFields)
	}
	if size > g.cfg.MaxHeaderBytes {
		return httpapi.Errorf(http.StatusRequestHeaderFieldsTooLarge, httpapi.CodeHeadersTooBig,
			"%d bytes of headers, over the limit of %d", size, g.cfg.MaxHeaderBytes)
	}
	return nil
}

// hasBody reports whether the request carries a body (declared or chunked).
func hasBody(r *http.Request) bool {
	if r.ContentLength > 0 {
		return true
	}
	return r.ContentLength < 0 && r.Body != nil && r.Body != http.NoBody
}

func isJSON(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	return err == nil && mt == "application/json"
}

// rateLimited refuses a request: 429 with Retry-After in whole seconds,
// rounded up.
func (g *Gateway) rateLimited(w http.ResponseWriter, class, scope string, retry time.Duration, msg string) {
	g.mRateLimited.WithLabelValues(class, scope).Inc()
	e := httpapi.Errorf(http.StatusTooManyRequests, httpapi.CodeRateLimited, "%s; retry in %ds", msg, retrySeconds(retry))
	e.RetryAfter = retry
	httpapi.WriteError(w, e)
}

func retrySeconds(d time.Duration) int {
	s := int((d + time.Second - 1) / time.Second)
	if s < 1 {
		s = 1
	}
	return s
}
