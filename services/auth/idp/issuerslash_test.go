package idp_test

import (
	"testing"

	"github.com/edgechat/edgechat/services/auth/idp"
	"github.com/edgechat/edgechat/services/auth/idp/idptest"
)

// An issuer configured with a trailing slash its provider does not write
// (or without the one it writes: Auth0's issuer ends in "/", its domain
// as people copy it does not) is the same provider: sign-ins work, with
// tokens whose iss is the provider's own spelling. It failed discovery
// for ever ("did not match the issuer URL returned by provider"), every
// sign-in answered 503 provider_unavailable as if the provider were down.
func TestIssuerConfiguredWithATrailingSlash(t *testing.T) {
	e := newEnv(t, func(pc *idp.ProviderConfig) { pc.Issuer += "/" })
	op := e.op
	status, out := e.exchange("test", op.Token(idptest.Claims{"sub": "t-1", "preferred_username": "tara"}))
	if status != 200 || out["userId"] != "tara" {
		t.Fatalf("exchange with the issuer configured as %s/: %d %v", op.Issuer, status, out)
	}
	// Another issuer is still another issuer.
	if status, out := e.exchange("test", op.Token(idptest.Claims{"sub": "t-2", "iss": op.Issuer + "/other"})); status != 401 {
		t.Fatalf("a token of another issuer: %d %v, want 401", status, out)
	}
	// MQTT CONNECT picks the provider by the token's iss and verifies it.
	p, handled, err := e.svc.ConnectPrincipal(op.Token(idptest.Claims{"sub": "t-1"}))
	if !handled || err != nil || p.UserID != "tara" {
		t.Fatalf("CONNECT with the provider's token: %+v handled %v: %v", p, handled, err)
	}
}
