package idp_test

import (
	"context"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/edgechat/edgechat/services/auth/idp/idptest"
)

// TestVerifyLatencyWarm measures what validating a provider JWT adds
// with a warm JWKS cache (RS256, 2048-bit key): p50 and p99 over 2000
// verifications. Run with EDGECHAT_FIGURES=1 to print the figures; it
// checks only that no verification fetched anything.
func TestVerifyLatencyWarm(t *testing.T) {
	e := newEnv(t)
	p, _ := e.svc.Provider("test")
	ctx := context.Background()
	tok := e.op.Token(idptest.Claims{"sub": "u-1", "preferred_username": "x"})
	if _, err := p.Verify(ctx, tok, ""); err != nil {
		t.Fatal(err)
	}
	hits := e.op.JWKSHits()
	const n = 2000
	d := make([]time.Duration, n)
	for i := range d {
		start := time.Now()
		if _, err := p.Verify(ctx, tok, ""); err != nil {
			t.Fatal(err)
		}
		d[i] = time.Since(start)
	}
	if e.op.JWKSHits() != hits {
		t.Fatalf("warm verifications fetched the JWKS %d times", e.op.JWKSHits()-hits)
	}
	slices.Sort(d)
	if os.Getenv("EDGECHAT_FIGURES") != "" {
		t.Logf("provider JWT verification, warm cache: p50 %v, p99 %v, max %v (n=%d)", d[n/2], d[n*99/100], d[n-1], n)
	}
}
