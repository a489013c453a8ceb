package web_test

import (
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/edgechat/edgechat/node/nodetest"
)

// A sign-in whose answer the network lost (the server made the session)
// shows an error; pressing Sign in again must not make a second session
// (the session list showed this browser twice, one of them a session no
// one holds): the page sends the sign-in again under the same
// Idempotency-Key, and the server answers the session it made.
func TestSignInAgainAfterALostAnswerIsOneSession(t *testing.T) {
	n := nodetest.StartNode(t)
	n.NewUser(t, "alice")
	alice := browser(t)
	run(t, alice, "alice signs in: the server makes her session, its answer is lost",
		chromedp.Navigate(n.HTTPURL+"/"),
		chromedp.WaitVisible(chromedp.CSS(`#username`)),
		chromedp.Evaluate[chromedp.Void](`(() => {
			const f = window.fetch;
			let first = true;
			window.__keys = [];
			window.fetch = async (url, opts) => {
				if (String(url).endsWith('/auth/login')) window.__keys.push((opts.headers || {})['Idempotency-Key'] || '');
				const res = await f(url, opts);
				if (first && String(url).endsWith('/auth/login')) {
					first = false;
					throw new TypeError('Failed to fetch');
				}
				return res;
			};
		})()`),
		chromedp.SendKeys(chromedp.CSS(`#username`), "alice"),
		chromedp.SendKeys(chromedp.CSS(`#password`), nodetest.Password("alice")+"\n"),
		poll(`document.querySelector('form.signin p.error').textContent !== ''`),
	)
	run(t, alice, "she presses Sign in again and is signed in",
		chromedp.SendKeys(chromedp.CSS(`#password`), "\n"),
		chromedp.WaitVisible(chromedp.CSS(`.state[data-state="online"][data-synced="true"]`)))
	var res struct{ Sessions []struct{ Device string } }
	getJSON(t, n.HTTPURL, n.Token(t, "alice"), "/auth/sessions", &res)
	web := 0
	for _, s := range res.Sessions {
		if strings.HasPrefix(s.Device, "web-") {
			web++
		}
	}
	keys := eval[[]string](t, alice, `window.__keys`)
	if web != 1 {
		t.Fatalf("the browser made %d sessions, want 1 (Idempotency-Keys sent: %q)", web, keys)
	}
	if len(keys) != 2 || keys[0] == "" || keys[0] != keys[1] {
		t.Fatalf("the sign-in and its retry went under Idempotency-Keys %q, want one key twice", keys)
	}
}
