package web_test

import (
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/node/nodetest"
)

// A page reload whose session refresh lost its answer on the network
// (the server rotated the cookie; the answer and its Set-Cookie never
// reached the browser) must not cost the session: the next reload sends
// the old cookie again under the same Idempotency-Key and the server
// answers it as a retry. It used to take the old cookie for a stolen
// one, end the session and ask for the password.
func TestAReloadAfterALostRefreshAnswerKeepsTheSession(t *testing.T) {
	n := nodetest.StartNode(t)
	proxy, loseNext, lost := testutil.LostAnswerProxy(t, n.HTTPURL, "/auth/refresh")
	alice := browser(t)
	register(t, alice, proxy, "alice")
	loseNext()
	// The browser may itself send the request again on a new connection
	// (the dropped one was a kept-alive one), with the same cookie and
	// key; else the page does (it tries a refresh that got no answer
	// again), or, should it show the sign-in form, a reload does it.
	run(t, alice, "a reload whose refresh answer is lost",
		chromedp.Reload(),
		poll(`!!(document.querySelector('.state[data-state="online"]') || document.querySelector('#username'))`),
	)
	if !lost() {
		t.Fatal("the reload's refresh did not go through the proxy")
	}
	if eval[bool](t, alice, `!!document.querySelector('#username')`) {
		run(t, alice, "the next reload", chromedp.Reload())
	}
	run(t, alice, "the page is signed in, the session kept",
		chromedp.WaitVisible(chromedp.CSS(`.state[data-state="online"]`)),
	)
}

// A reload while the node cannot answer for the session (503: a cluster
// electing its leader; the cookie is kept for the retry, docs/protocol.md
// Auth) keeps the session: the page tries again and comes up signed in.
// It showed the sign-in form, as if the user had been signed out.
func TestAReloadWhileTheNodeCannotRefreshKeepsTheSession(t *testing.T) {
	n := nodetest.StartNode(t)
	n.NewUser(t, "alice")
	front, refusals := refusingProxy(t, n.HTTPURL, "/auth/refresh", 2)
	alice := browser(t)
	signIn(t, alice, front.URL, "alice")
	run(t, alice, "a reload while the node answers the refresh 503, then the page",
		chromedp.Reload(),
		poll(`!!(document.querySelector('.state[data-state="online"]') || document.querySelector('#username'))`))
	if eval[bool](t, alice, `!!document.querySelector('#username')`) {
		t.Fatal("the page shows the sign-in form: the session it could not refresh for a moment is alive")
	}
	if left := refusals.Load(); left >= 0 {
		t.Fatalf("%d refusals left unused", left+1)
	}
}
