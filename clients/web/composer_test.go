package web_test

import (
	"fmt"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/edgechat/edgechat/node/nodetest"
)

// Enter pressed to confirm an input method's candidate (Japanese,
// Chinese, Korean: the keydown comes with isComposing, keyCode 229) is
// the input method's, not a send: the message goes out at the next
// Enter, whole, not cut where the first word was confirmed.
func TestEnterThatConfirmsACompositionDoesNotSend(t *testing.T) {
	n := nodetest.StartNode(t)
	n.NewUser(t, "bob")
	alice := browser(t)
	register(t, alice, n.HTTPURL, "alice")
	run(t, alice, "alice opens a chat with bob",
		chromedp.SendKeys(chromedp.CSS(`#new-chat`), "bob\n"),
		chromedp.WaitEnabled(chromedp.CSS(`#composer`)),
	)
	const compose = `(() => {
		const el = document.querySelector('#composer');
		el.focus();
		el.value += %s;
		el.dispatchEvent(new InputEvent('input', { bubbles: true, isComposing: true }));
		el.dispatchEvent(new KeyboardEvent('keydown', { key: 'Enter', keyCode: 229, isComposing: true, bubbles: true, cancelable: true }));
	})()`
	run(t, alice, "alice writes にほん and confirms it with Enter, then ご and confirms it",
		chromedp.Evaluate[chromedp.Void](fmt.Sprintf(compose, `'にほん'`)),
		chromedp.Evaluate[chromedp.Void](fmt.Sprintf(compose, `'ご'`)),
		chromedp.SendKeys(chromedp.CSS(`#composer`), "\n"), // the Enter that sends
		poll(shows("ご", true)),
		poll(`document.querySelectorAll('.msg[data-cid]').length === 0`),
	)
	if got := eval[[]string](t, alice, `[...document.querySelectorAll('.msg.mine[data-id] .text')].map(e => e.textContent)`); len(got) != 1 || got[0] != "にほんご" {
		t.Fatalf("alice's page shows her messages %q, want one: にほんご", got)
	}
}

// An error belongs to what failed: a chat opened with a name that does
// not exist says so, and once the user opens the right one and writes,
// the error is gone (it stayed under the form for the page's life, over
// a chat that worked).
func TestAnErrorGoesWhenTheNextTryWorks(t *testing.T) {
	n := nodetest.StartNode(t)
	n.NewUser(t, "bob")
	alice := browser(t)
	register(t, alice, n.HTTPURL, "alice")
	run(t, alice, "alice mistypes bob's name",
		chromedp.SendKeys(chromedp.CSS(`#new-chat`), "bobb\n"),
		poll(`document.querySelector('.error').textContent === 'No user named bobb'`),
	)
	run(t, alice, "and corrects it, then writes to bob",
		chromedp.Evaluate[chromedp.Void](`document.querySelector('#new-chat').value = ''`),
		chromedp.SendKeys(chromedp.CSS(`#new-chat`), "bob\n"),
		chromedp.WaitEnabled(chromedp.CSS(`#composer`)),
		chromedp.SendKeys(chromedp.CSS(`#composer`), "hello\n"),
		poll(shows("hello", true)),
	)
	if got := textOf(t, alice, `.error`); got != "" {
		t.Fatalf("alice's page still shows the error %q", got)
	}
}
