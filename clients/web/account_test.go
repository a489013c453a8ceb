package web_test

import (
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/edgechat/edgechat/node/nodetest"
)

// Sign out everywhere: alice is signed in in two browsers; signing out
// everywhere in one lands it on the sign-in screen, and the other, which
// still shows the app, cannot refresh: its next reload asks her to sign
// in.
func TestSignOutEverywhere(t *testing.T) {
	n := nodetest.StartNode(t)
	laptop, phone := browser(t), browser(t)
	register(t, laptop, n.HTTPURL, "alice")
	signIn(t, phone, n.HTTPURL, "alice")
	if unnamed := eval[[]string](t, laptop, accessibleNames); len(unnamed) != 0 {
		t.Fatalf("controls without an accessible name: %q", unnamed)
	}

	run(t, laptop, "alice signs out everywhere on the laptop",
		click(`#sign-out-everywhere`),
		chromedp.WaitVisible(chromedp.CSS(`#username`)),
		chromedp.Reload(),
		chromedp.WaitVisible(chromedp.CSS(`#username`)),
	)
	run(t, phone, "the phone's session is gone at its next refresh",
		chromedp.Reload(),
		chromedp.WaitVisible(chromedp.CSS(`#username`)),
	)
	signIn(t, phone, n.HTTPURL, "alice") // and signing in again works
}
