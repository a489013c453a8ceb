package web_test

import (
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/edgechat/edgechat/node/nodetest"
)

// A chat asked for under a user's qualified name in this very region
// (bob@eu, typed in eu) is the chat with bob: GET /user/bob@eu answers
// his profile as userId bob, and the page opened a second conversation,
// d:bob@eu, beside d:bob, where what alice sent never showed as sent
// (its stored copy, to bob, went to the other conversation).
func TestAChatWithAQualifiedNameOfThisRegionIsTheUsersChat(t *testing.T) {
	eu, _ := nodetest.StartRegionPair(t, "eu", "us")
	eu.NewUser(t, "bob")
	alice := browser(t)
	register(t, alice, eu.HTTPURL, "alice")
	run(t, alice, "alice writes to bob@eu",
		chromedp.SendKeys(chromedp.CSS(`#new-chat`), "bob@eu\n"),
		chromedp.WaitEnabled(chromedp.CSS(`#composer`)),
		chromedp.SendKeys(chromedp.CSS(`#composer`), "hello bob\n"),
		poll(`[...document.querySelectorAll('[data-conv]')].some(e => e.textContent.includes('hello bob'))`),
	)
	convs := eval[[]string](t, alice, `[...document.querySelectorAll('[data-conv]')].map(e => e.dataset.conv)`)
	if len(convs) != 1 || convs[0] != "d:bob" {
		t.Fatalf("the list shows the conversations %q, want only d:bob", convs)
	}
	if title := textOf(t, alice, `#conv-title`); title != "bob" {
		t.Fatalf("the open conversation is titled %q, want bob", title)
	}
	run(t, alice, "her message shows sent in the open conversation", poll(shows("hello bob", true)))
	if k := eval[int](t, alice, `document.querySelectorAll('.msg[data-cid]').length`); k != 0 {
		t.Fatalf("%d messages still show as not stored", k)
	}
}
