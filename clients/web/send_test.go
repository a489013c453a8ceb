package web_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/edgechat/edgechat/node/nodetest"
)

// refuseSends makes the page's MQTT client answer its next n chat
// publishes itself with PUBACK 0x83 (not committed: what a node without
// a quorum answers) and record their cids in window.__cids.
func refuseSends(n int) chromedp.Action[chromedp.Void] { return refuseSendsWith(n, 0x83) }

// refuseSendsWith is refuseSends with the PUBACK reason code given.
func refuseSendsWith(n, code int) chromedp.Action[chromedp.Void] {
	return chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`(async () => {
		const src = document.querySelector('script[type="module"]').src.replace(/js\/app\.js$/, 'vendor/mqtt.esm.js');
		const P = (await import(src)).default.MqttClient.prototype;
		window.__refuse = %d;
		window.__refuseCode = %d;
		window.__cids = window.__cids || [];
		if (!P.__real) {
			P.__real = P.publish;
			P.publish = function (topic, msg, opts, cb) {
				if (topic.endsWith('/newMessage')) window.__cids.push(JSON.parse(msg).cid);
				if (window.__refuse > 0 && topic.endsWith('/newMessage')) {
					window.__refuse--;
					setTimeout(() => cb(undefined, { reasonCode: window.__refuseCode }), 0);
					return this;
				}
				return P.__real.apply(this, arguments);
			};
		}
	})()`, n, code), chromedp.EvalAwaitPromise)
}

// A message the server could not commit (0x83) is sent again under the
// same cid, by the page itself for a few seconds, then by the user's
// Retry: it is stored once, never under a second cid (a new send after
// a failure stored it twice when the first had been committed after all).
func TestAMessageNotCommittedIsSentAgainUnderItsCid(t *testing.T) {
	n := nodetest.StartNode(t)
	n.NewUser(t, "bob")
	n.NewUser(t, "alice")
	alice := browser(t)
	signIn(t, alice, n.HTTPURL, "alice")
	run(t, alice, "alice opens a chat with bob; the server refuses her next two sends",
		chromedp.SendKeys(chromedp.CSS(`#new-chat`), "bob\n"),
		chromedp.WaitEnabled(chromedp.CSS(`#composer`)),
		refuseSends(2),
		chromedp.SendKeys(chromedp.CSS(`#composer`), "first try\n"),
		poll(shows("first try", true)),
	)
	run(t, alice, "the server refuses all her sends for a while",
		refuseSends(1000),
		chromedp.SendKeys(chromedp.CSS(`#composer`), "second try\n"),
		poll(`!!document.querySelector('.msg[data-cid][data-state="failed"] .retry')`),
		refuseSends(0),
		click(`.msg[data-cid][data-state="failed"] .retry`),
		poll(shows("second try", true)),
	)
	cids := eval[[]string](t, alice, `window.__cids`)
	var history struct {
		Messages []struct{ CID, Body string }
	}
	if err := json.Unmarshal(apiCall(t, "GET", n.HTTPURL+"/chat/history?with=bob", n.Token(t, "alice"), ""), &history); err != nil {
		t.Fatal(err)
	}
	stored := map[string]int{}
	for _, m := range history.Messages {
		stored[m.Body]++
	}
	if stored["first try"] != 1 || stored["second try"] != 1 || len(history.Messages) != 2 {
		t.Fatalf("stored %v, want each message once", stored)
	}
	// One cid per message: the first three attempts, then the second's.
	distinct := map[string]bool{}
	for _, c := range cids {
		distinct[c] = true
	}
	if len(distinct) != 2 || len(cids) < 5 || cids[0] != cids[2] {
		t.Fatalf("the page published under the cids %s", strings.Join(cids, " "))
	}
	if eval[int](t, alice, `document.querySelectorAll('.msg[data-cid]').length`) != 0 {
		t.Fatal("a message is still pending")
	}
}

// holdSends makes the page's MQTT client keep its chat publishes (no
// PUBACK ever comes: a connection that is about to drop).
func holdSends() chromedp.Action[chromedp.Void] {
	return chromedp.Evaluate[chromedp.Void](`(async () => {
		const src = document.querySelector('script[type="module"]').src.replace(/js\/app\.js$/, 'vendor/mqtt.esm.js');
		const P = (await import(src)).default.MqttClient.prototype;
		const real = P.publish;
		P.publish = function (topic, msg, opts, cb) {
			if (topic.endsWith('/newMessage')) return this;
			return real.apply(this, arguments);
		};
	})()`, chromedp.EvalAwaitPromise)
}

// A message still "sending…" when the page is reloaded (the connection
// down, the user reloads to mend it) is sent after the reload, under its
// cid (so once, even if the first attempt was committed). It was lost:
// the reloaded page knew nothing of it.
func TestAMessageSendingAtAReloadIsSentAfterIt(t *testing.T) {
	n := nodetest.StartNode(t)
	n.NewUser(t, "bob")
	n.NewUser(t, "alice")
	alice := browser(t)
	signIn(t, alice, n.HTTPURL, "alice")
	run(t, alice, "alice writes to bob; no PUBACK comes",
		chromedp.SendKeys(chromedp.CSS(`#new-chat`), "bob\n"),
		chromedp.WaitEnabled(chromedp.CSS(`#composer`)),
		holdSends(),
		chromedp.SendKeys(chromedp.CSS(`#composer`), "before the reload\n"),
		poll(`!!document.querySelector('.msg[data-cid][data-state="pending"]')`),
	)
	run(t, alice, "alice reloads the page, and it is sent",
		chromedp.Reload(),
		chromedp.WaitVisible(chromedp.CSS(`.state[data-state="online"]`)),
		click(`[data-conv="d:bob"]`),
		poll(shows("before the reload", true)),
		poll(`document.querySelectorAll('.msg[data-cid]').length === 0`),
	)
	var history struct{ Messages []struct{ Body string } }
	if err := json.Unmarshal(apiCall(t, "GET", n.HTTPURL+"/chat/history?with=alice", n.Token(t, "bob"), ""), &history); err != nil {
		t.Fatal(err)
	}
	if len(history.Messages) != 1 || history.Messages[0].Body != "before the reload" {
		t.Fatalf("bob's history: %+v", history.Messages)
	}
}

// A message refused for the user's publish rate (0x97 quota exceeded:
// every tab's heartbeats and receipts count, and a page back from a long
// sleep sends a delivered receipt to each peer at once) is sent again a
// moment later under its cid, as one not committed is: it failed at once
// ("not sent"), though the bucket refills within a second.
func TestAMessageOverThePublishRateIsSentAgain(t *testing.T) {
	n := nodetest.StartNode(t)
	n.NewUser(t, "bob")
	n.NewUser(t, "alice")
	alice := browser(t)
	signIn(t, alice, n.HTTPURL, "alice")
	run(t, alice, "alice writes to bob; her next two sends are over the rate",
		chromedp.SendKeys(chromedp.CSS(`#new-chat`), "bob\n"),
		chromedp.WaitEnabled(chromedp.CSS(`#composer`)),
		refuseSendsWith(2, 0x97),
		chromedp.SendKeys(chromedp.CSS(`#composer`), "over the rate\n"),
		poll(shows("over the rate", true)+` || !!document.querySelector('.msg[data-cid][data-state="failed"]')`),
	)
	if eval[bool](t, alice, `!!document.querySelector('.msg[data-cid][data-state="failed"]')`) {
		t.Fatalf("the message failed: %q", textOf(t, alice, `.msg[data-cid] .meta`))
	}
	if cids := eval[[]string](t, alice, `window.__cids`); len(cids) != 3 || cids[0] != cids[2] {
		t.Fatalf("the page published under the cids %q, want one, three times", cids)
	}
}
