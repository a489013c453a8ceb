package node_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
	"github.com/edgechat/edgechat/services/auth/idp"
	"github.com/edgechat/edgechat/services/auth/idp/idptest"
)

// A code-flow login that fails once its state is known goes back to
// where it was to end, with the error in the fragment, as its tokens
// would have: a user who cancels at the provider (or whose token is
// refused) returns to the app, which can say why, instead of stranding
// on a JSON error page at /auth/oidc/{provider}/callback. A login that
// named no redirect is answered JSON, as before.
func TestOIDCCodeFlowRefusalGoesBackToTheApp(t *testing.T) {
	op := idptest.Start(t)
	n := nodetest.StartNode(t, withOIDC(op))
	start := n.HTTPURL + "/auth/oidc/corp/start"
	fragment := func(resp *http.Response, want string) url.Values {
		t.Helper()
		loc, err := url.Parse(resp.Header.Get("Location"))
		if resp.StatusCode != http.StatusFound || err != nil || !strings.HasPrefix(loc.String(), want+"#") {
			t.Fatalf("a refused login: %d to %q, want 302 to %s#error=...", resp.StatusCode, resp.Header.Get("Location"), want)
		}
		frag, _ := url.ParseQuery(loc.EscapedFragment())
		if frag.Get("access_token") != "" || frag.Get("refresh_token") != "" {
			t.Fatalf("a refused login hands over tokens: %v", frag)
		}
		return frag
	}

	// The web app (a cookie session to "/"): the user cancels at the provider.
	op.SetDenied(true)
	resp, _ := browse(t, browser(t, op, func(u *url.URL) bool { return u.Path == "/" }), start+"?session=cookie&redirect=%2F")
	frag := fragment(resp, "/")
	if frag.Get("error") != idp.CodeLoginFailed || !strings.Contains(frag.Get("error_description"), "access_denied") {
		t.Fatalf("cancelled at the provider: fragment %v, want error %s naming access_denied", frag, idp.CodeLoginFailed)
	}
	for _, c := range resp.Cookies() {
		if c.Name == "edgechat_refresh" && c.MaxAge >= 0 {
			t.Fatalf("a refused login set the session cookie: %+v", c)
		}
	}
	op.SetDenied(false)

	// An app with an allowed redirect: an ID token refused (a bad nonce).
	op.SetBadNonce(true)
	op.NextLogin(idptest.Claims{"sub": "m-1", "preferred_username": "max"})
	resp, _ = browse(t, browser(t, op, func(u *url.URL) bool { return u.Host == "app.example" }), start+"?redirect="+url.QueryEscape(appRedirect))
	if frag := fragment(resp, appRedirect); frag.Get("error") != idp.CodeInvalidSubjectToken || frag.Get("error_description") == "" {
		t.Fatalf("refused ID token: fragment %v, want error %s with a description", frag, idp.CodeInvalidSubjectToken)
	}

	// Without a redirect: the JSON error, as before.
	if resp, out := browse(t, browser(t, op, nil), start); resp.StatusCode != http.StatusUnauthorized || out.Error.Code != idp.CodeInvalidSubjectToken {
		t.Fatalf("refused ID token, no redirect: %d %+v", resp.StatusCode, out)
	}
	op.SetBadNonce(false)
	if c := accounts(t, n); c != 0 {
		t.Fatalf("%d accounts after refused logins, want 0", c)
	}
}

// A sign-in started while the provider cannot be reached (its discovery
// fails) goes back to the app too, once its redirect is known to be
// allowed; a redirect that is not allowed is still refused as JSON.
func TestOIDCStartWhileTheProviderIsDownGoesBackToTheApp(t *testing.T) {
	op := idptest.Start(t)
	op.SetDown(true)
	n := nodetest.StartNode(t, withOIDC(op))
	start := n.HTTPURL + "/auth/oidc/corp/start"
	resp, _ := browse(t, browser(t, op, func(u *url.URL) bool { return u.Path == "/" }), start+"?session=cookie&redirect=%2F")
	loc, err := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusFound || err != nil || loc.Path != "/" {
		t.Fatalf("start with the provider down: %d to %q, want 302 to /#error=...", resp.StatusCode, resp.Header.Get("Location"))
	}
	if frag, _ := url.ParseQuery(loc.EscapedFragment()); frag.Get("error") != idp.CodeProviderUnavailable || frag.Get("error_description") == "" {
		t.Fatalf("start with the provider down: fragment %v, want error %s with a description", frag, idp.CodeProviderUnavailable)
	}
	if resp, out := browse(t, browser(t, op, nil), start+"?redirect="+url.QueryEscape("https://evil.example/x")); resp.StatusCode != 400 || out.Error.Code != idp.CodeRedirectNotAllowed {
		t.Fatalf("a redirect not allowed, provider down: %d %+v", resp.StatusCode, out)
	}
	if resp, out := browse(t, browser(t, op, nil), start); resp.StatusCode != http.StatusServiceUnavailable || out.Error.Code != idp.CodeProviderUnavailable {
		t.Fatalf("no redirect, provider down: %d %+v, want 503 %s", resp.StatusCode, out, idp.CodeProviderUnavailable)
	}
}

// A provider configured with an audience other than the client ID (for
// the access tokens apps exchange, whose aud names the API) still signs
// web users in through the code flow: the ID token the code flow gets is
// issued to this server's client, so its aud is the client ID (OpenID
// Connect Core 3.1.3.7); it was checked against the configured audience
// and refused, 401 invalid_subject_token, for every user.
func TestOIDCCodeFlowWithAnAudienceOtherThanTheClientID(t *testing.T) {
	op := idptest.Start(t)
	n := nodetest.StartNode(t, nodetest.WithConfig(func(c *node.Config) {
		c.OIDCProviders = []idp.ProviderConfig{{Name: "corp", Issuer: op.Issuer, ClientID: idptest.ClientID, CAFile: op.CAFile,
			Audience: "chat-api"}}
	}))
	op.NextLogin(idptest.Claims{"sub": "a-1", "preferred_username": "ann"})
	if resp, got := browse(t, browser(t, op, nil), n.HTTPURL+"/auth/oidc/corp/start"); resp.StatusCode != 200 || got.UserID != "ann" {
		t.Fatalf("code flow with audience chat-api: %d %+v", resp.StatusCode, got)
	}
	// The token exchange still wants the configured audience.
	if status, _ := exchange(t, n, "corp", op.Token(idptest.Claims{"sub": "a-1"})); status != http.StatusUnauthorized {
		t.Fatalf("exchange of a token whose aud is the client ID, audience chat-api: %d, want 401", status)
	}
	if status, got := exchange(t, n, "corp", op.Token(idptest.Claims{"sub": "a-1", "aud": []string{"chat-api"}})); status != 200 || got.UserID != "ann" {
		t.Fatalf("exchange of a token for chat-api: %d %+v", status, got)
	}
	// A code flow's ID token issued to another client is still refused.
	op.NextLogin(idptest.Claims{"sub": "a-2", "preferred_username": "bo", "aud": "other-client"})
	if resp, out := browse(t, browser(t, op, nil), n.HTTPURL+"/auth/oidc/corp/start"); resp.StatusCode != http.StatusUnauthorized || out.Error.Code != idp.CodeInvalidSubjectToken {
		t.Fatalf("code flow ID token for another client: %d %+v", resp.StatusCode, out)
	}
}
