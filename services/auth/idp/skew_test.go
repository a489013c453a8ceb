package idp_test

import (
	"testing"
	"time"

	"github.com/edgechat/edgechat/services/auth/idp"
	"github.com/edgechat/edgechat/services/auth/idp/idptest"
)

// clock_skew may be set up to 10 minutes (for a provider whose clock is
// known to drift): a token the provider has just issued, with nbf (as
// Microsoft Entra ID writes it) and iat of now, must get in whatever the
// allowance; nbf and iat further in the future than the allowance stay
// refused, and exp is allowed the same skew.
func TestClockSkewAllowanceAboveFiveMinutes(t *testing.T) {
	for _, skew := range []time.Duration{time.Minute, 6 * time.Minute, 10 * time.Minute} {
		t.Run(skew.String(), func(t *testing.T) {
			e := newEnv(t, func(pc *idp.ProviderConfig) { pc.Skew = skew })
			now := time.Now()
			fresh := idptest.Claims{"sub": "s-1", "preferred_username": "nora", "nbf": now.Unix(), "iat": now.Unix()}
			if status, out := e.exchange("test", e.op.Token(fresh)); status != 200 {
				t.Fatalf("a token issued now (nbf = iat = now), skew %v: %d %v", skew, status, out)
			}
			ahead := now.Add(skew - 10*time.Second).Unix()
			if status, out := e.exchange("test", e.op.Token(idptest.Claims{"sub": "s-1", "nbf": ahead, "iat": ahead})); status != 200 {
				t.Fatalf("nbf and iat within the skew ahead: %d %v", status, out)
			}
			beyond := now.Add(skew + time.Minute).Unix()
			if status, _ := e.exchange("test", e.op.Token(idptest.Claims{"sub": "s-1", "nbf": beyond})); status != 401 {
				t.Fatalf("nbf beyond the skew: %d, want 401", status)
			}
			if status, out := e.exchange("test", e.op.Token(idptest.Claims{"sub": "s-1", "exp": now.Add(-skew + 20*time.Second).Unix()})); status != 200 {
				t.Fatalf("exp within the skew behind: %d %v", status, out)
			}
		})
	}
}
