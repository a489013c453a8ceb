package node_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

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
