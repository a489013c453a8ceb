package web_test

import (
	"fmt"
	"strings"
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

// A message longer than the server takes (a body of at most 8 KiB,
// docs/protocol.md Message envelope) is not sent, and the page says why
// and keeps the text in the composer to be shortened. It was sent: the
// composer emptied, the message showed "not sent: refused (0x99)" with a
// Retry that could only fail again, and the text was no longer editable.
func TestATooLongMessageStaysInTheComposer(t *testing.T) {
	n := nodetest.StartNode(t)
	n.NewUser(t, "bob")
	alice := browser(t)
	register(t, alice, n.HTTPURL, "alice")
	run(t, alice, "alice opens bob's chat and sends a message of 9,000 bytes (4,500 é)",
		chromedp.SendKeys(chromedp.CSS(`#new-chat`), "bob\n"),
		chromedp.WaitEnabled(chromedp.CSS(`#composer`)),
		chromedp.Evaluate[chromedp.Void](`(() => { const c = document.querySelector('#composer'); c.value = 'é'.repeat(4500); c.dispatchEvent(new Event('input')); })()`),
		click(`.composer button[type="submit"]`),
		poll(`/too long/.test(document.querySelector('.error').textContent) || !!document.querySelector('.msg.mine[data-state="failed"]')`),
	)
	if got := textOf(t, alice, `.error`); !strings.Contains(got, "too long") {
		t.Fatalf("the page says %q", got)
	}
	if k := eval[int](t, alice, `document.querySelector('#composer').value.length`); k != 4500 {
		t.Fatalf("the composer holds %d characters, want the 4,500 written", k)
	}
	if k := eval[int](t, alice, `document.querySelectorAll('.msg.mine').length`); k != 0 {
		t.Fatalf("%d messages shown as sent or sending", k)
	}
	run(t, alice, "shortened, it is sent",
		chromedp.Evaluate[chromedp.Void](`(() => { const c = document.querySelector('#composer'); c.value = 'é'.repeat(4000); c.dispatchEvent(new Event('input')); })()`),
		click(`.composer button[type="submit"]`),
		poll(`!!document.querySelector('.msg.mine[data-id]')`))
	if got := textOf(t, alice, `.error`); got != "" {
		t.Fatalf("the page still says %q", got)
	}
}
