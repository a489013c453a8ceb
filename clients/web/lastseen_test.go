package web_test

import (
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/edgechat/edgechat/node/nodetest"
)

// "last seen just now" ages: five minutes later the header and the
// conversation list say "5 minutes ago" though nothing else changed (the
// page redrew its texts only when something arrived). The page's clock
// is moved on instead of waiting.
func TestLastSeenAgesWithoutAnyChange(t *testing.T) {
	n := nodetest.StartNode(t)
	alice, bob := browser(t), browser(t)
	register(t, alice, n.HTTPURL, "alice")
	register(t, bob, n.HTTPURL, "bob")
	run(t, alice, "alice writes to bob",
		chromedp.SendKeys(chromedp.CSS(`#new-chat`), "bob\n"),
		chromedp.WaitEnabled(chromedp.CSS(`#composer`)),
		chromedp.SendKeys(chromedp.CSS(`#composer`), "are you there?\n"),
		chromedp.WaitVisible(chromedp.CSS(`.msg.mine[data-id]`)),
		chromedp.WaitVisible(chromedp.CSS(`[data-conv="d:bob"] .dot[data-presence="online"]`)),
	)
	chromedp.Cancel(bob)
	run(t, alice, "alice sees bob just gone",
		chromedp.WaitVisible(chromedp.CSS(`[data-conv="d:bob"] .dot[data-presence="offline"]`)),
		poll(`document.querySelector('.conversation .sub').textContent === 'last seen just now'`),
	)
	run(t, alice, "five minutes on, the page says so",
		chromedp.Evaluate[chromedp.Void](`(() => { const now = Date.now; Date.now = () => now.call(Date) + 5 * 60000; })()`),
		poll(`document.querySelector('.conversation .sub').textContent === 'last seen 5 minutes ago'`),
		poll(`document.querySelector('[data-conv="d:bob"]').getAttribute('aria-label').includes('last seen 5 minutes ago')`),
	)
}
