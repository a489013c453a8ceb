package web_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
)

// A reconnect after the page refreshed its access token (a minute before
// each expires) presents the token the page holds, not the one it first
// connected with: the MQTT client kept the sign-in's token as its
// password, so every reconnect once that token had expired was refused
// (CONNACK 0x86) and cost a refresh before the next attempt; with the
// page's node away (failover, where the session cookie cannot be
// refreshed) it could not reconnect at all though it held a good token.
//
// The node's tokens last 1 s (and 30 s more: the verification's
// leeway), so the page refreshes every 10 s (its shortest wait) and the
// token it signed in with is refused after about 31 s; its expiresSoon
// is made to say no, as it does for 14 of a real token's 15 minutes
// (with a TTL under a minute every reconnect refreshes).
func TestAReconnectUsesTheRefreshedToken(t *testing.T) {
	n := nodetest.StartNode(t, nodetest.WithConfig(func(c *node.Config) { c.AccessTTL = time.Second }))
	n.NewUser(t, "alice")
	px := newCutProxy(t, n.HTTPURL)
	tab := browser(t)
	signIn(t, tab, px.srv.URL, "alice")
	later := n.Token(t, "alice") // expires after the token the page signed in with
	run(t, tab, "the page's tokens never expire soon; refused CONNACKs are counted",
		chromedp.Evaluate[chromedp.Void](`(async () => {
			const base = document.querySelector('script[type="module"]').src.replace(/js\/app\.js$/, '');
			const { Api } = await import(base + 'js/api.js');
			Api.prototype.expiresSoon = function () { return !this.token; };
			const P = (await import(base + 'vendor/mqtt.esm.js')).default.MqttClient.prototype;
			window.__refused = [];
			const emit = P.emit;
			P.emit = function (ev, err) {
				if (ev === 'error' && err && (err.code === 0x86 || err.code === 0x87)) window.__refused.push(err.code);
				return emit.apply(this, arguments);
			};
		})()`, chromedp.EvalAwaitPromise),
	)
	// The page refreshed (its timer), and the token it signed in with has
	// expired since.
	nodetest.CheckFor(t, 60*time.Second, 100*time.Millisecond, func() error {
		if got := refreshCounts(n.HTTPURL)["success"]; got < 1 {
			return fmt.Errorf("the page has not refreshed yet (%v)", got)
		}
		if _, err := apiDo("GET", n.HTTPURL+"/user/me", later, ""); err == nil {
			return fmt.Errorf("the sign-in's token is still good")
		}
		return nil
	})
	before := refreshCounts(n.HTTPURL)["success"]
	px.cut()
	run(t, tab, "the page is offline", poll(`!document.querySelector('.state[data-state="online"]')`))
	px.heal()
	run(t, tab, "the page is back", poll(`!!document.querySelector('.state[data-state="online"]')`))
	if refused := eval[[]int](t, tab, `window.__refused`); len(refused) != 0 {
		t.Fatalf("the broker refused the page's reconnect %d times (codes %v): it presented the expired token it first connected with; refreshes %v before the cut, %v after",
			len(refused), refused, before, refreshCounts(n.HTTPURL)["success"])
	}
}
