package idp_test

import (
	"testing"
	"time"

	"github.com/edgechat/edgechat/services/auth/idp/idptest"
)

// A provider whose JWKS cannot be fetched before the node ever had its
// keys (down since the node started) is asked again at most once per
// jwks_min_refetch, as it is once keys were fetched: every token
// presented meanwhile (apps reconnecting, users retrying) made a fetch,
// so a provider already failing took a request per sign-in attempt.
func TestJWKSNeverFetchedIsNotAskedOnEveryToken(t *testing.T) {
	e := newEnv(t) // jwks_min_refetch 5s
	e.op.SetJWKSDown(true)
	tok := e.op.Token(idptest.Claims{"sub": "j-1", "preferred_username": "jo"})
	for i := range 20 {
		if status, out := e.exchange("test", tok); status != 503 {
			t.Fatalf("exchange %d with the JWKS down: %d %v, want 503", i, status, out)
		}
	}
	if n := e.op.JWKSHits(); n > 1 {
		t.Fatalf("20 exchanges within jwks_min_refetch made %d JWKS fetches, want 1", n)
	}
	// Once the provider is back, the next fetch (past jwks_min_refetch) signs the user in.
	e.op.SetJWKSDown(false)
	e.clock.Advance(6 * time.Second)
	if status, out := e.exchange("test", tok); status != 200 {
		t.Fatalf("exchange once the JWKS is back: %d %v", status, out)
	}
}
