package idp_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/services/auth/idp/idptest"
)

// jwksFetches is how many JWKS fetches ended with result ("ok" or
// "error"), by the provider's metric.
func (e *env) jwksFetches(result string) float64 {
	e.t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		e.t.Fatal(err)
	}
	n := 0.0
	for _, mf := range mfs {
		if mf.GetName() != "edgechat_oidc_jwks_fetches_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" && l.GetValue() == result {
					n += m.GetCounter().GetValue()
				}
			}
		}
	}
	return n
}

// A provider whose JWKS endpoint accepts the connection and never
// answers must not hold sign-ins once the cached keys are older than
// jwks_max_age: the keys it has are used at once while one fetch runs in
// the background. Before, every sign-in waited for the fetch (10 s, its
// timeout) and only then fell back to the same keys.
func TestStaleJWKSServeAtOnceWhileOneRefreshRuns(t *testing.T) {
	e := newEnv(t) // jwks_max_age 1m
	p, _ := e.svc.Provider("test")
	ctx := context.Background()
	if _, err := p.Verify(ctx, e.op.Token(idptest.Claims{"sub": "u"}), ""); err != nil {
		t.Fatal(err)
	}
	hits := e.op.JWKSHits()
	release := e.op.HangJWKS(t)
	e.clock.Advance(2 * time.Minute)
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := p.Verify(ctx, e.op.Token(idptest.Claims{"sub": "u"}), ""); err != nil {
				t.Errorf("a token of a known key with stale keys: %v", err)
			}
		}()
	}
	wg.Wait()
	// The verifications did not wait for the fetch: it has not ended.
	if n := e.jwksFetches("error"); n != 0 {
		t.Fatalf("the sign-ins waited for the hanging JWKS fetch to fail (%v failed fetches)", n)
	}
	testutil.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if e.op.JWKSHits() == hits {
			return errors.New("no refresh of the stale keys")
		}
		return nil
	})
	if got := e.op.JWKSHits() - hits; got != 1 {
		t.Fatalf("%d JWKS requests for 20 sign-ins with stale keys, want 1 (in the background)", got)
	}
	// Once the provider answers, the refresh brings the keys.
	release()
	testutil.CheckFor(t, 15*time.Second, 10*time.Millisecond, func() error {
		if e.jwksFetches("ok") < 2 {
			return errors.New("the background refresh has not ended")
		}
		return nil
	})
}

// Stale keys and a token of a key the provider rotated in since: the
// token waits for the refresh it started, rather than being refused as
// of an unknown key because a fetch began a moment ago.
func TestStaleJWKSAndARotatedKey(t *testing.T) {
	e := newEnv(t)
	p, _ := e.svc.Provider("test")
	ctx := context.Background()
	if _, err := p.Verify(ctx, e.op.Token(idptest.Claims{"sub": "u"}), ""); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(2 * time.Minute)
	e.op.Rotate()
	for i := range 3 {
		if _, err := p.Verify(ctx, e.op.Token(idptest.Claims{"sub": "u"}), ""); err != nil {
			t.Fatalf("token %d of the rotated-in key: %v", i, err)
		}
	}
}
