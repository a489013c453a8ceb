package web_test

import (
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
	"github.com/edgechat/edgechat/services/auth/idp"
	"github.com/edgechat/edgechat/services/auth/idp/idptest"
)

// "Sign in with corp": the page lists the node's providers; the button
// goes through the provider's code flow (a test provider over HTTPS) and
// back to the app, signed in by the session cookie, as the account the
// first sign-in created; a reload keeps the session.
func TestSignInWithProvider(t *testing.T) {
	op := idptest.Start(t)
	op.NextLogin(idptest.Claims{"sub": "d-1", "preferred_username": "dora", "name": "Dora"})
	n := nodetest.StartNode(t, nodetest.WithConfig(func(c *node.Config) {
		c.OIDCProviders = []idp.ProviderConfig{{Name: "corp", Issuer: op.Issuer, ClientID: idptest.ClientID, CAFile: op.CAFile}}
	}))
	// The browser has to trust the test provider's own certificate.
	dora := browser(t, chromedp.Flag("ignore-certificate-errors", true))
	run(t, dora, "the sign-in page offers the provider",
		chromedp.Navigate(n.HTTPURL+"/"),
		chromedp.WaitVisible(chromedp.CSS(`a.provider[data-provider="corp"]`)),
	)
	if got := textOf(t, dora, `a.provider[data-provider="corp"]`); got != "Sign in with corp" {
		t.Fatalf("the button says %q", got)
	}
	run(t, dora, "dora signs in through the provider",
		click(`a.provider[data-provider="corp"]`),
		chromedp.WaitVisible(chromedp.CSS(`.state[data-state="online"]`)),
	)
	if me, url := textOf(t, dora, `.topbar .me`), eval[string](t, dora, `location.href`); me != "dora" || url != n.HTTPURL+"/" {
		t.Fatalf("signed in as %q at %q (no token may stay in the URL)", me, url)
	}
	run(t, dora, "a reload keeps the session",
		chromedp.Reload(),
		chromedp.WaitVisible(chromedp.CSS(`.state[data-state="online"]`)),
	)
	if readable := eval[string](t, dora, `document.cookie`); readable != "" {
		t.Fatalf("the page can read cookies: %q", readable)
	}
	// Her account has no password: the page offers none to change.
	run(t, dora, "no password form for an account without a password",
		poll(`document.querySelector('#account-panel') && document.querySelector('#account-panel').hidden`),
	)
}

// A provider's sign-in the user cancels (or that is refused) comes back
// to the app, whose sign-in page says why, with nothing left in the
// address; before, the browser stopped on the callback's JSON error.
func TestACancelledProviderSignInSaysSo(t *testing.T) {
	op := idptest.Start(t)
	op.SetDenied(true)
	n := nodetest.StartNode(t, nodetest.WithConfig(func(c *node.Config) {
		c.OIDCProviders = []idp.ProviderConfig{{Name: "corp", Issuer: op.Issuer, ClientID: idptest.ClientID, CAFile: op.CAFile}}
	}))
	dora := browser(t, chromedp.Flag("ignore-certificate-errors", true))
	run(t, dora, "the sign-in page offers the provider",
		chromedp.Navigate(n.HTTPURL+"/"),
		chromedp.WaitVisible(chromedp.CSS(`a.provider[data-provider="corp"]`)),
	)
	// Following the button's link (Navigate waits for the page at the
	// end of its redirects, where a click's navigation would not be
	// waited for).
	href := eval[string](t, dora, `document.querySelector('a.provider[data-provider="corp"]').href`)
	run(t, dora, "dora cancels at the provider",
		chromedp.Navigate(href),
		poll(`!!document.querySelector('form.signin .error') && document.querySelector('form.signin .error').textContent !== ''`),
	)
	if msg, url := textOf(t, dora, `form.signin .error`), eval[string](t, dora, `location.href`); !strings.Contains(msg, "access_denied") || url != n.HTTPURL+"/" {
		t.Fatalf("the sign-in page says %q at %q, want why (access_denied) and no error left in the address", msg, url)
	}
	// She tries again and signs in.
	op.SetDenied(false)
	op.NextLogin(idptest.Claims{"sub": "d-1", "preferred_username": "dora"})
	run(t, dora, "dora signs in through the provider",
		click(`a.provider[data-provider="corp"]`),
		chromedp.WaitVisible(chromedp.CSS(`.state[data-state="online"]`)),
	)
}
