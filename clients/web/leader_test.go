package web_test

import (
	"fmt"
	"testing"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/edgechat/edgechat/node/nodetest"
)

// countReceipts makes the app in window w (a script naming it) count the
// WebSocket frames it sends that publish to user/bob/receipts.
func countReceipts(w string) chromedp.Action[chromedp.Void] {
	return chromedp.Evaluate[chromedp.Void](`(() => {
		const w = ` + w + `;
		w.__receipts = 0;
		const send = w.WebSocket.prototype.send;
		w.WebSocket.prototype.send = function (d) {
			try {
				const u = d instanceof ArrayBuffer ? new Uint8Array(d) : ArrayBuffer.isView(d) ? new Uint8Array(d.buffer, d.byteOffset, d.byteLength) : null;
				if (u && new TextDecoder().decode(u).includes('user/bob/receipts')) w.__receipts++;
			} catch { /* not bytes */ }
			return send.call(this, d);
		};
	})()`)
}

// asUserGesture evaluates as if the user had clicked (a page may open a
// window only then).
func asUserGesture(p *runtime.EvaluateParams) {
	yes := true
	p.UserGesture = &yes
}

// Several tabs of the app in one browser: one of them sends the
// "delivered" receipts (and heartbeats) for the browser, and when it
// goes (here: reloads) the next takes over. Every tab sent its own: with
// a few tabs open the user spent the publish rate all their connections
// share (20/s) several times over, and their own messages met 0x97 and
// waited.
func TestOneTabSendsTheBrowsersReceipts(t *testing.T) {
	n := nodetest.StartNode(t)
	n.NewUser(t, "alice")
	bobTok := n.NewUser(t, "bob")
	tab := browser(t)
	signIn(t, tab, n.HTTPURL, "alice")
	const holds = `.state').dataset.device === localStorage.getItem('edgechat-device')`
	run(t, tab, "the first tab holds the browser's device ID; a second tab opens",
		poll(`document.querySelector('`+holds),
		chromedp.Evaluate[chromedp.Void](`window.__w = window.open('/', 'second'); undefined`, asUserGesture),
		poll(`!!(window.__w && window.__w.document.querySelector('.state[data-state="online"][data-synced="true"]'))`),
		countReceipts(`window`), countReceipts(`window.__w`))
	last := func(w string) string {
		return `(` + w + `.document.querySelector('[data-conv="d:bob"] .conv-last') || {}).textContent`
	}
	for i := 1; i <= 2; i++ {
		if err := postMessage(n.HTTPURL, bobTok, fmt.Sprintf(`{"to":"alice","cid":"r%d","type":"text","body":"m%d"}`, i, i)); err != nil {
			t.Fatal(err)
		}
		run(t, tab, fmt.Sprintf("both tabs have bob's message %d", i),
			poll(fmt.Sprintf(`%s === 'm%d' && %s === 'm%d'`, last("window"), i, last("window.__w"), i)))
	}
	run(t, tab, "receipts were sent", poll(`window.__receipts + window.__w.__receipts >= 2`))
	if got := eval[[]int](t, tab, `[window.__receipts, window.__w.__receipts]`); got[0] != 2 || got[1] != 0 {
		t.Fatalf("the two tabs sent %v receipts for bob's two messages, want [2 0] (one tab for the browser)", got)
	}
	run(t, tab, "the first tab reloads: the second takes over",
		chromedp.Reload(),
		chromedp.WaitVisible(chromedp.CSS(`.state[data-state="online"]`)),
		chromedp.Evaluate[chromedp.Void](`window.__w = window.open('', 'second'); undefined`, asUserGesture),
		poll(`!!window.__w.document.querySelector('.state[data-state="online"]') && window.__w.document.querySelector('`+holds),
		countReceipts(`window`), chromedp.Evaluate[chromedp.Void](`window.__w.__receipts = 0`))
	if err := postMessage(n.HTTPURL, bobTok, `{"to":"alice","cid":"r3","type":"text","body":"m3"}`); err != nil {
		t.Fatal(err)
	}
	run(t, tab, "both have bob's next message; the second tab said it was delivered",
		poll(last("window")+` === 'm3' && `+last("window.__w")+` === 'm3'`),
		poll(`window.__w.__receipts >= 1`))
	if got := eval[[]int](t, tab, `[window.__receipts, window.__w.__receipts]`); got[0] != 0 || got[1] != 1 {
		t.Fatalf("after the hand-over the tabs sent %v receipts for bob's message, want [0 1]", got)
	}
}
