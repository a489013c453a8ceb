package web_test

import (
	"encoding/json"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/edgechat/edgechat/node/nodetest"
)

// A tab signed in as alice whose browser session became bob's (he signed
// in in another tab after alice's session there had ended; the tabs
// share the session cookie) gets bob's token at its next refresh. The
// page went on as alice with bob's token: alice's conversations on the
// screen, bob's answers (here his session list) shown in them, and what
// alice wrote sent with bob's token. It must start over as bob, nothing
// of alice's left.
func TestARefreshThatAnswersAnotherUserShowsThatUser(t *testing.T) {
	n := nodetest.StartNode(t)
	n.NewUser(t, "alice")
	n.NewUser(t, "bob")
	carolTok := n.NewUser(t, "carol")
	if err := postMessage(n.HTTPURL, carolTok, `{"to":"alice","cid":"c1","type":"text","body":"for alice only"}`); err != nil {
		t.Fatal(err)
	}
	tab := browser(t)
	signIn(t, tab, n.HTTPURL, "alice")
	run(t, tab, "alice sees carol's message in her list", poll(`!!document.querySelector('[data-conv="d:carol"]')`))
	status := value(t, tab, "bob signs in in another tab of the browser", chromedp.Evaluate[int](`fetch('/auth/login', {
		method: 'POST', headers: {'Content-Type': 'application/json'}, credentials: 'same-origin',
		body: JSON.stringify({username: 'bob', password: `+jsString(nodetest.Password("bob"))+`, session: 'cookie'}),
	}).then((r) => r.status)`, chromedp.EvalAwaitPromise))
	if status != 200 {
		t.Fatalf("bob's sign-in: %d", status)
	}
	run(t, tab, "alice's access token has expired: the tab's next call is answered 401, and it refreshes",
		chromedp.Evaluate[chromedp.Void](`(() => {
			const f = window.fetch;
			let first = true;
			window.fetch = (url, opts) => {
				if (first && String(url).endsWith('/auth/sessions')) {
					first = false;
					return Promise.resolve(new Response('{"error":{"code":"unauthorized"}}', {status: 401, headers: {'Content-Type': 'application/json'}}));
				}
				return f(url, opts);
			};
		})()`),
		click(`#sessions-panel summary`))
	run(t, tab, "the page is bob's now, with nothing of alice's",
		poll(`document.querySelector('.topbar .me').textContent === 'bob' && !!document.querySelector('.state[data-state="online"]') && !document.querySelector('[data-conv="d:carol"]') && !document.body.innerText.includes('for alice only')`))
}

// jsString is s as a JavaScript string literal.
func jsString(s string) string {
	b, err := json.Marshal(s)
	if err != nil {
		panic(err)
	}
	return string(b)
}
