package web_test

import (
	"context"
	"strings"
	"testing"
	"time"

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

// Change password: alice is signed in in two browsers and changes her
// password in one. A wrong current password is refused with a message
// and changes nothing; the change itself keeps the laptop signed in
// (online again, and still signed in after a reload: its cookie holds
// the new session) while the phone lands on the sign-in screen at its
// next reload; the old password no longer signs in, the new one does.
func TestChangePassword(t *testing.T) {
	n := nodetest.StartNode(t)
	laptop, phone := browser(t), browser(t)
	register(t, laptop, n.HTTPURL, "alice")
	signIn(t, phone, n.HTTPURL, "alice")
	time.Sleep(5 * time.Millisecond) // the change's millisecond follows the sign-ins'

	run(t, laptop, "alice tries a wrong current password",
		click(`#account-panel summary`),
		chromedp.WaitVisible(chromedp.CSS(`#current-password`)),
		chromedp.SendKeys(chromedp.CSS(`#current-password`), "not-her-password"),
		chromedp.SendKeys(chromedp.CSS(`#new-password`), "new-password-1"),
		click(`#change-password`),
		poll(`document.querySelector('#password-status').textContent.includes('current password is wrong')`),
	)
	if unnamed := eval[[]string](t, laptop, accessibleNames); len(unnamed) != 0 {
		t.Fatalf("controls without an accessible name: %q", unnamed)
	}
	run(t, laptop, "alice changes her password",
		poll(`(document.querySelector('#current-password').value = '', document.querySelector('#new-password').value = '', true)`),
		chromedp.SendKeys(chromedp.CSS(`#current-password`), nodetest.Password("alice")),
		chromedp.SendKeys(chromedp.CSS(`#new-password`), "new-password-1"),
		click(`#change-password`),
		poll(`document.querySelector('#password-status').textContent.includes('Password changed')`),
		chromedp.WaitVisible(chromedp.CSS(`.state[data-state="online"]`)),
		chromedp.Reload(),
		chromedp.WaitVisible(chromedp.CSS(`.state[data-state="online"]`)),
	)
	run(t, phone, "the phone's session is gone at its next reload",
		chromedp.Reload(),
		chromedp.WaitVisible(chromedp.CSS(`#username`)),
		chromedp.SendKeys(chromedp.CSS(`#username`), "alice"),
		chromedp.SendKeys(chromedp.CSS(`#password`), nodetest.Password("alice")+"\n"),
		poll(`document.querySelector('.error, [role=alert]') && document.querySelector('.error, [role=alert]').textContent.length > 0`),
		poll(`(document.querySelector('#password').value = '', true)`),
		chromedp.SendKeys(chromedp.CSS(`#password`), "new-password-1\n"),
		chromedp.WaitVisible(chromedp.CSS(`.state[data-state="online"]`)),
	)
}

// Sessions: alice, signed in in two browsers, lists her sessions on the
// laptop (this one marked, no button for it); a third browser's sign-in
// appears in the open list by itself; she signs that one out: its page
// lands on the sign-in screen by itself (its connection is closed and
// its session cannot refresh), the other two stay.
func TestEndAnotherSession(t *testing.T) {
	n := nodetest.StartNode(t)
	laptop, phone := browser(t), browser(t)
	register(t, laptop, n.HTTPURL, "alice")
	signIn(t, phone, n.HTTPURL, "alice")
	run(t, laptop, "alice opens her sessions",
		click(`#sessions-panel summary`),
		poll(`document.querySelectorAll('#sessions-panel li').length === 2`),
	)
	if unnamed := eval[[]string](t, laptop, accessibleNames); len(unnamed) != 0 {
		t.Fatalf("controls without an accessible name: %q", unnamed)
	}
	if n := eval[int](t, laptop, `document.querySelectorAll('#sessions-panel li .this').length`); n != 1 {
		t.Fatalf("%d sessions marked as this browser, want 1", n)
	}
	// Each browser's sign-in named its device (its own ID, kept in localStorage).
	if named := eval[int](t, laptop, `[...document.querySelectorAll('#sessions-panel li .what')].filter((e) => /^web-[0-9a-f]{12} — /.test(e.textContent)).length`); named != 2 {
		t.Fatalf("%d sessions named by their browser's device, want 2", named)
	}
	// A sign-in elsewhere shows up in the open list by itself (the
	// session.created event).
	tablet := browser(t)
	signIn(t, tablet, n.HTTPURL, "alice")
	run(t, laptop, "the tablet's sign-in appears in the open list",
		poll(`document.querySelectorAll('#sessions-panel li').length === 3`),
	)
	// The list is most recently used first: the first button is the
	// tablet's.
	run(t, laptop, "alice signs the tablet out",
		click(`#sessions-panel .end-session`),
		poll(`document.querySelectorAll('#sessions-panel li').length === 2`),
	)
	run(t, tablet, "the tablet lands on the sign-in screen by itself",
		chromedp.WaitVisible(chromedp.CSS(`#username`)),
	)
	for name, ctx := range map[string]context.Context{"laptop": laptop, "phone": phone} {
		run(t, ctx, "the "+name+" stays signed in",
			chromedp.Reload(),
			chromedp.WaitVisible(chromedp.CSS(`.state[data-state="online"]`)),
		)
	}
}

// A draft belongs to the user who wrote it: signed out and another user
// signed in on the same tab, the same conversation's composer is empty
// (it showed the first user's unsent text).
func TestADraftDoesNotOutliveItsUsersSession(t *testing.T) {
	n := nodetest.StartNode(t)
	n.NewUser(t, "alice")
	n.NewUser(t, "bob")
	n.NewUser(t, "carol")
	tab := browser(t)
	signIn(t, tab, n.HTTPURL, "alice")
	run(t, tab, "alice starts writing to carol, does not send, and signs out",
		chromedp.SendKeys(chromedp.CSS(`#new-chat`), "carol\n"),
		chromedp.WaitEnabled(chromedp.CSS(`#composer`)),
		chromedp.SendKeys(chromedp.CSS(`#composer`), "my private draft"),
		click(`#sign-out`),
		chromedp.WaitVisible(chromedp.CSS(`#username`)),
	)
	run(t, tab, "bob signs in on the same tab and opens a chat with carol",
		chromedp.SendKeys(chromedp.CSS(`#username`), "bob"),
		chromedp.SendKeys(chromedp.CSS(`#password`), nodetest.Password("bob")+"\n"),
		chromedp.WaitVisible(chromedp.CSS(`.state[data-state="online"]`)),
		chromedp.SendKeys(chromedp.CSS(`#new-chat`), "carol\n"),
		chromedp.WaitEnabled(chromedp.CSS(`#composer`)),
		poll(`document.querySelector('#conv-title').textContent === 'carol'`),
	)
	if got := eval[string](t, tab, `document.querySelector('#composer').value`); got != "" {
		t.Fatalf("bob's composer shows %q, alice's draft", got)
	}
}

// alice looks at a picture at a shared computer and leaves; from her
// phone she signs that browser out. Its page lands on the sign-in
// screen with nothing of hers on it: the picture's viewer stayed open
// over the sign-in form.
func TestSigningOutClosesTheMediaViewer(t *testing.T) {
	n := nodetest.StartNode(t)
	n.NewUser(t, "bob")
	shared, phone := browser(t), browser(t)
	register(t, shared, n.HTTPURL, "alice")
	signIn(t, phone, n.HTTPURL, "alice")
	run(t, shared, "alice sends bob a picture and looks at it",
		chromedp.SendKeys(chromedp.CSS(`#new-chat`), "bob\n"),
		chromedp.WaitEnabled(chromedp.CSS(`#composer`)),
		chromedp.SetUploadFiles(chromedp.CSS(`#attach`), []string{writePNG(t, "holiday.png")}),
		chromedp.WaitVisible(chromedp.CSS(`.msg.mine[data-id] img.thumb:not(.blurred)`)),
		click(`.thumbbtn`),
		chromedp.WaitVisible(chromedp.CSS(`dialog.viewer img`)),
	)
	run(t, phone, "from her phone alice signs the shared browser out",
		click(`#sessions-panel summary`),
		poll(`document.querySelectorAll('#sessions-panel li').length === 2`),
		click(`#sessions-panel .end-session`),
		poll(`document.querySelectorAll('#sessions-panel li').length === 1`),
	)
	run(t, shared, "the shared browser lands on the sign-in screen", chromedp.WaitVisible(chromedp.CSS(`#username`)))
	if k := eval[int](t, shared, `document.querySelectorAll('dialog, img').length`); k != 0 {
		t.Fatalf("the signed-out page still shows %d dialogs and pictures of alice's: %q", k,
			eval[string](t, shared, `[...document.querySelectorAll('dialog, img')].map((e) => e.outerHTML).join(' ')`))
	}
}

// "Sign out" the server did not get (its node down behind the
// balancer) says so and leaves the page signed in, to be tried again:
// the page showed the sign-in screen while the session (the HttpOnly
// cookie, which only the server clears) lived on, and the next person
// at the computer who reloaded the page was signed in as alice.
func TestSignOutTheServerDidNotGetIsNotShownAsDone(t *testing.T) {
	n := nodetest.StartNode(t)
	n.NewUser(t, "alice")
	px := newCutProxy(t, n.HTTPURL)
	tab := browser(t)
	signIn(t, tab, px.srv.URL, "alice")
	run(t, tab, "the page has caught up", chromedp.WaitVisible(chromedp.CSS(`.state[data-synced="true"]`)))
	px.cut()
	run(t, tab, "alice signs out while the node is away",
		click(`#sign-out`),
		poll(`!!document.querySelector('#username') || /sign out/i.test((document.querySelector('.error') || {}).textContent)`),
	)
	px.heal()
	if eval[bool](t, tab, `!!document.querySelector('#username')`) {
		run(t, tab, "the next person reloads the page", chromedp.Reload(), chromedp.WaitReady(`body`),
			poll(`!!document.querySelector('#username') || !!document.querySelector('.state[data-state="online"]')`))
		t.Fatalf("the page said alice was signed out, and a reload signs her in: %v", eval[bool](t, tab, `!!document.querySelector('.state[data-state="online"]')`))
	}
	run(t, tab, "she tries again once it is back",
		click(`#sign-out`),
		chromedp.WaitVisible(chromedp.CSS(`#username`)),
		chromedp.Reload(),
		chromedp.WaitVisible(chromedp.CSS(`#username`)),
	)
}

// A sign-up the server made whose answer the network lost shows an
// error; pressing "Create account" again must sign the new user in, not
// answer that the name is taken (by the account just made): the page
// sends the sign-up again under the same Idempotency-Key.
func TestCreatingAnAccountAgainAfterALostAnswerSignsIn(t *testing.T) {
	n := nodetest.StartNode(t)
	alice := browser(t)
	run(t, alice, "alice signs up: the server makes her account, its answer is lost",
		chromedp.Navigate(n.HTTPURL+"/"),
		chromedp.WaitVisible(chromedp.CSS(`#username`)),
		chromedp.Evaluate[chromedp.Void](`(() => {
			const f = window.fetch;
			let first = true;
			window.fetch = async (url, opts) => {
				const res = await f(url, opts);
				if (first && String(url).endsWith('/auth/register')) {
					first = false;
					throw new TypeError('Failed to fetch');
				}
				return res;
			};
		})()`),
		chromedp.SendKeys(chromedp.CSS(`#username`), "alice"),
		chromedp.SendKeys(chromedp.CSS(`#password`), "password-alice"),
		click(`#register`),
		poll(`document.querySelector('form.signin p.error').textContent !== ''`),
	)
	run(t, alice, "she presses Create account again and is signed in",
		click(`#register`),
		chromedp.WaitVisible(chromedp.CSS(`.state[data-state="online"]`)),
	)
}

// "Sign in" pressed twice (a double click, Enter then the button) signs
// in once: the page started the app for each answer, the first one's
// MQTT connection left running (its heartbeats too, and, holding the
// browser's device ID, the next tab or sign-in could not take it), and
// each press made a session of its own.
func TestSignInPressedTwiceSignsInOnce(t *testing.T) {
	n := nodetest.StartNode(t)
	n.NewUser(t, "alice")
	alice := browser(t)
	run(t, alice, "alice presses Sign in twice",
		chromedp.Navigate(n.HTTPURL+"/"),
		chromedp.WaitVisible(chromedp.CSS(`#username`)),
		chromedp.SendKeys(chromedp.CSS(`#username`), "alice"),
		chromedp.SendKeys(chromedp.CSS(`#password`), nodetest.Password("alice")),
		chromedp.Evaluate[chromedp.Void](`(() => { const f = document.querySelector('form.signin'); f.requestSubmit(); f.requestSubmit(); })()`),
		chromedp.WaitVisible(chromedp.CSS(`.state[data-state="online"][data-synced="true"]`)))
	var res struct{ Sessions []struct{ Device string } }
	getJSON(t, n.HTTPURL, n.Token(t, "alice"), "/auth/sessions", &res)
	web := 0
	for _, s := range res.Sessions {
		if strings.HasPrefix(s.Device, "web-") {
			web++
		}
	}
	if web != 1 {
		t.Errorf("the browser made %d sessions, want 1: %+v", web, res.Sessions)
	}
	if conns := metricLines(n.HTTPURL, "edgechat_mqtt_connections "); conns != "edgechat_mqtt_connections 1" {
		t.Errorf("MQTT connections: %q, want 1", conns)
	}
}
