package gateway

import (
	"log/slog"
	"net/http"
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgechat/edgechat/internal/httpapi"
	"github.com/edgechat/edgechat/internal/testutil"
)

// newPeerEnv is newEnvClock with a cluster of two other members: n2 at
// 192.0.2.10, n3 at 192.0.2.11 and 2001:db8::11.
func newPeerEnv(t *testing.T, cfg Config) *env {
	t.Helper()
	members := map[string][]netip.Addr{
		"n2": {netip.MustParseAddr("192.0.2.10")},
		"n3": {netip.MustParseAddr("192.0.2.11"), netip.MustParseAddr("2001:db8::11")},
	}
	c := testutil.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	e := &env{reg: prometheus.NewRegistry(), logs: &lockedBuf{}}
	cfg.Addr = "127.0.0.1:0"
	g, err := New(cfg, Deps{
		Verifier:   testVerifier,
		Logger:     slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Registerer: e.reg,
		Gatherer:   e.reg,
		Now:        c.Now, // never advanced: a spent bucket stays spent
		Peer: func(addr netip.Addr, node string) bool {
			for _, a := range members[node] {
				if a == addr {
					return true
				}
			}
			return false
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = g.Close() })
	e.g = g
	g.Mount(httpapi.Route{Method: "GET", Pattern: "/media/{id}", Handler: func(w http.ResponseWriter, r *http.Request) {
		httpapi.WriteJSON(w, http.StatusOK, map[string]string{"peer": r.Header.Get(httpapi.HeaderPeer)})
	}})
	return e
}

// A member's own request to another member's HTTP API (a media read it
// makes for its user, a segment copy) names it in X-Edgechat-Peer and
// comes from its address: it skips the per-IP bucket, which every user
// reading through that member would otherwise share. The header alone,
// from an address that is not that member's, or forwarded by a proxy,
// changes nothing: a client cannot skip the limits by sending it.
func TestPeerRequestSkipsThePerIPBucket(t *testing.T) {
	e := newPeerEnv(t, Config{PerIP: RateSpec{Rate: 1, Burst: 2}, RateLimits: map[string]RateSpec{httpapi.ClassRead: {Rate: 1, Burst: 1000}}})
	const tok = "Bearer good-alice"
	for i := range 20 {
		w := e.from("192.0.2.10:40000", "GET", "/media/m1", tok, nil, httpapi.HeaderPeer, "n2")
		wantStatus(t, w, 200, "")
		if i == 0 && w.Body.String() != "{\"peer\":\"n2\"}\n" {
			t.Fatalf("the handler saw %s, want the member named", w.Body)
		}
	}
	for i := range 20 { // another member, over IPv6
		wantStatus(t, e.from("[2001:db8::11]:40000", "GET", "/media/m1", tok, nil, httpapi.HeaderPeer, "n3"), 200, "")
		if i == 0 && len(e.logs.lines(t, "http request")) == 0 {
			t.Fatal("no access log line")
		}
	}
	lines := e.logs.lines(t, "http request")
	if l := lines[len(lines)-1]; l["member"] != "n3" {
		t.Fatalf("access log line %v: want member n3", l)
	}

	for _, tc := range []struct {
		name, peer string
		hdr        []string
	}{
		{"a client naming a member", "198.51.100.7:5000", []string{httpapi.HeaderPeer, "n2"}},
		{"a member's address naming another member", "192.0.2.11:5000", []string{httpapi.HeaderPeer, "n2"}},
		{"a member's address without the header", "192.0.2.10:5001", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for range 2 {
				w := e.from(tc.peer, "GET", "/media/m1", tok, nil, tc.hdr...)
				wantStatus(t, w, 200, "")
				if w.Body.String() != "{\"peer\":\"\"}\n" {
					t.Fatalf("the handler saw %s: the header passed from a non-member", w.Body)
				}
			}
			want429(t, e.from(tc.peer, "GET", "/media/m1", tok, nil, tc.hdr...), "1")
		})
	}
	if n, _ := testutil.MetricValue(t, e.reg, "edgechat_http_rate_limited_total", map[string]string{"class": "all", "scope": "ip"}); n != 3 {
		t.Fatalf("rate_limited{all,ip} = %v, want 3", n)
	}
}

// A proxy on a member's address (trusted, or not) that passes a client's
// request on says so with X-Forwarded-For or Forwarded: that request is
// the client's, limited as any, whatever header the client added.
func TestPeerHeaderThroughAProxyOnAMembersAddressIsLimited(t *testing.T) {
	for _, trusted := range []bool{true, false} {
		for _, fwd := range [][]string{
			{"X-Forwarded-For", "192.0.2.10"}, // the member's own address, as a client may write it
			{"X-Forwarded-For", "198.51.100.7"},
			{"Forwarded", "for=198.51.100.7"},
		} {
			cfg := Config{PerIP: RateSpec{Rate: 1, Burst: 2}, RateLimits: map[string]RateSpec{httpapi.ClassRead: {Rate: 1, Burst: 1000}}}
			if trusted {
				cfg.TrustedProxies = []string{"192.0.2.10"}
			}
			e := newPeerEnv(t, cfg)
			hdr := append([]string{httpapi.HeaderPeer, "n2"}, fwd...)
			for range 2 {
				wantStatus(t, e.from("192.0.2.10:40000", "GET", "/media/m1", "Bearer good-alice", nil, hdr...), 200, "")
			}
			w := e.from("192.0.2.10:40000", "GET", "/media/m1", "Bearer good-alice", nil, hdr...)
			if w.Code != http.StatusTooManyRequests {
				t.Errorf("trusted proxy %v, %s: %s: the third request got %d, want 429", trusted, fwd[0], fwd[1], w.Code)
			}
		}
	}
}

// The class bucket is skipped too: the read a member makes for its user
// was charged to that user on the node they asked (and a read another
// region asked for comes as the media's uploader, whose own bucket every
// such read would spend). Anyone else's request with the header is
// charged to its user as before.
func TestPeerRequestSkipsTheClassBucket(t *testing.T) {
	e := newPeerEnv(t, Config{PerIP: RateSpec{Rate: 1, Burst: 10000}, RateLimits: map[string]RateSpec{httpapi.ClassRead: {Rate: 1, Burst: 3}}})
	for range 20 {
		wantStatus(t, e.from("192.0.2.10:40000", "GET", "/media/m1", "Bearer good-alice", nil, httpapi.HeaderPeer, "n2"), 200, "")
	}
	for range 3 {
		wantStatus(t, e.from("198.51.100.7:5000", "GET", "/media/m1", "Bearer good-alice", nil, httpapi.HeaderPeer, "n2"), 200, "")
	}
	want429(t, e.from("198.51.100.7:5000", "GET", "/media/m1", "Bearer good-alice", nil, httpapi.HeaderPeer, "n2"), "1")
	// Authentication still applies to a member's request.
	wantStatus(t, e.from("192.0.2.10:40000", "GET", "/media/m1", "Bearer forged", nil, httpapi.HeaderPeer, "n2"), 401, httpapi.CodeUnauthorized)
	if n, _ := testutil.MetricValue(t, e.reg, "edgechat_http_rate_limited_total", map[string]string{"class": "read", "scope": "user"}); n != 1 {
		t.Fatalf("rate_limited{read,user} = %v, want 1", n)
	}
}

// A member's own request may carry a client's request that its node
// checked, with fields of its own: the header limits are not applied to
// it again. Anyone else's over the limit is refused, the header or not.
func TestPeerRequestSkipsTheHeaderLimits(t *testing.T) {
	e := newPeerEnv(t, Config{MaxHeaderFields: 5})
	hdr := []string{httpapi.HeaderPeer, "n2", "X-A", "1", "X-B", "2", "X-C", "3", "X-D", "4", "X-E", "5"}
	wantStatus(t, e.from("192.0.2.10:40000", "GET", "/media/m1", "Bearer good-alice", nil, hdr...), 200, "")
	wantStatus(t, e.from("198.51.100.7:5000", "GET", "/media/m1", "Bearer good-alice", nil, hdr...), http.StatusRequestHeaderFieldsTooLarge, httpapi.CodeHeadersTooBig)
}
