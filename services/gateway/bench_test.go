package gateway

import (
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgechat/edgechat/internal/httpapi"
	"github.com/edgechat/edgechat/internal/wire"
)

// eddsaVerifier checks real EdDSA JWTs the way services/auth does the
// first time it sees a token (it remembers the tokens it verified), so
// the benchmark can show the cost of a verification next to the
// gateway's own.
type eddsaVerifier struct{ pub ed25519.PublicKey }

func (v eddsaVerifier) VerifyAccessToken(tok string) (wire.Principal, error) {
	var claims jwt.RegisteredClaims
	_, err := jwt.ParseWithClaims(tok, &claims, func(*jwt.Token) (any, error) { return v.pub, nil },
		jwt.WithValidMethods([]string{jwt.SigningMethodEdDSA.Alg()}), jwt.WithIssuer("edgechat"),
		jwt.WithExpirationRequired())
	if err != nil {
		return wire.Principal{}, fmt.Errorf("%w: %v", wire.ErrBadToken, err)
	}
	return wire.Principal{UserID: claims.Subject}, nil
}

// BenchmarkGatewayOverhead measures what the gateway adds to a request:
// the same handler called directly (with the principal already in the
// context, as a service sees it) and through the full middleware chain
// (request ID, per-IP and per-user token buckets, header checks, CORS,
// route lookup, authentication, body limit, access log to a discarded
// JSON handler, metrics). Reported: p50/p99 of each and their difference
// ("added"). verifier=map isolates the gateway's own work; verifier=eddsa
// includes a real Ed25519 JWT verification.
//
//	go test -run '^$' -bench BenchmarkGatewayOverhead -benchtime 20000x ./services/gateway
func BenchmarkGatewayOverhead(b *testing.B) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	signed, err := jwt.NewWithClaims(jwt.SigningMethodEdDSA, jwt.RegisteredClaims{
		Issuer: "edgechat", Subject: "alice", ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Hour)),
	}).SignedString(priv)
	if err != nil {
		b.Fatal(err)
	}
	for _, vc := range []struct {
		name  string
		v     Verifier
		token string
	}{
		{"verifier=map", testVerifier, "good-alice"},
		{"verifier=eddsa", eddsaVerifier{pub}, signed},
	} {
		b.Run(vc.name, func(b *testing.B) {
			huge := RateSpec{Rate: 1e12, Burst: 1 << 40} // limiters on, never refusing
			g, err := New(Config{
				Addr:        "127.0.0.1:0",
				PerIP:       huge,
				RateLimits:  map[string]RateSpec{httpapi.ClassRead: huge},
				CORSOrigins: []string{"https://app.example.com"},
			}, Deps{
				Verifier:   vc.v,
				Logger:     slog.New(slog.NewJSONHandler(io.Discard, nil)),
				Registerer: prometheus.NewRegistry(),
			})
			if err != nil {
				b.Fatal(err)
			}
			defer g.Close()
			profile := map[string]string{"userId": "bob", "displayName": "Bob", "about": "hello"}
			handler := func(w http.ResponseWriter, r *http.Request) {
				p, _ := httpapi.PrincipalFrom(r.Context())
				if p.UserID != "alice" || r.PathValue("uid") != "bob" {
					panic("handler saw the wrong request")
				}
				httpapi.WriteJSON(w, http.StatusOK, profile)
			}
			g.Mount(httpapi.Route{Method: http.MethodGet, Pattern: "/user/{uid}", Handler: handler})
			chain := g.Handler()
			u, _ := url.Parse("/user/bob")
			newReq := func() *http.Request {
				return &http.Request{
					Method: http.MethodGet, URL: u, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
					Host: "api.example.com", RemoteAddr: "192.0.2.1:40000", RequestURI: "/user/bob",
					Header: http.Header{
						"Authorization":   {"Bearer " + vc.token},
						"Accept":          {"application/json"},
						"Origin":          {"https://app.example.com"},
						"User-Agent":      {"edgechat-bench"},
						"Accept-Encoding": {"gzip"},
					},
					Body: http.NoBody,
				}
			}
			direct := make([]time.Duration, 0, b.N)
			through := make([]time.Duration, 0, b.N)
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				r := newReq().WithContext(httpapi.WithPrincipal(b.Context(), wire.Principal{UserID: "alice"}))
				r.SetPathValue("uid", "bob")
				w := httptest.NewRecorder()
				t0 := time.Now()
				handler(w, r)
				direct = append(direct, time.Since(t0))

				r = newReq()
				w = httptest.NewRecorder()
				t0 = time.Now()
				chain.ServeHTTP(w, r)
				through = append(through, time.Since(t0))
				if w.Code != http.StatusOK {
					b.Fatalf("through the gateway: %d %s", w.Code, w.Body)
				}
			}
			b.StopTimer()
			dp50, dp99 := percentiles(direct)
			cp50, cp99 := percentiles(through)
			b.ReportMetric(float64(dp50.Nanoseconds()), "direct-p50-ns")
			b.ReportMetric(float64(dp99.Nanoseconds()), "direct-p99-ns")
			b.ReportMetric(float64(cp50.Nanoseconds()), "gateway-p50-ns")
			b.ReportMetric(float64(cp99.Nanoseconds()), "gateway-p99-ns")
			b.ReportMetric(float64((cp50 - dp50).Nanoseconds()), "added-p50-ns")
			b.ReportMetric(float64((cp99 - dp99).Nanoseconds()), "added-p99-ns")
		})
	}
}

func percentiles(d []time.Duration) (p50, p99 time.Duration) {
	if len(d) == 0 {
		return 0, 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)*50/100], s[min(len(s)-1, len(s)*99/100)]
}
