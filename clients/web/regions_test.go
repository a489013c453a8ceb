package web_test

import (
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/edgechat/edgechat/node/nodetest"
)

// Two browsers in two regions: alice of eu finds bob of us by searching
// (his name comes qualified, bob@us), writes to him, and he gets it in
// his region's web client from alice@eu, reads it (alice sees it read),
// types (alice sees it) and replies; the reply reaches alice. Each
// browser talks to its own region only.
func TestChatAcrossRegions(t *testing.T) {
	eu, us := nodetest.StartRegionPair(t, "eu", "us")
	alice, bob := browser(t), browser(t)
	register(t, alice, eu.HTTPURL, "alice")
	register(t, bob, us.HTTPURL, "bob")

	// The search box asks once per keystroke: wait until eu reaches us.
	aliceTok := eu.Token(t, "alice")
	nodetest.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		var p struct{ UserID string }
		return tryGetJSON(eu.HTTPURL, aliceTok, "/user/bob@us", &p)
	})
	run(t, alice, "alice searches for bob and finds him in us",
		chromedp.SendKeys(chromedp.CSS(`#new-chat`), "bo"),
		poll(`[...document.querySelectorAll('#people option')].some(o => o.value === 'bob@us')`),
	)
	run(t, alice, "alice writes to bob@us",
		chromedp.SendKeys(chromedp.CSS(`#new-chat`), "b@us\n"),
		chromedp.WaitEnabled(chromedp.CSS(`#composer`)),
		chromedp.SendKeys(chromedp.CSS(`#composer`), "hello from eu\n"),
		chromedp.WaitVisible(chromedp.CSS(`.msg.mine[data-id]`)),
	)
	if title := textOf(t, alice, `#conv-title`); title != "bob@us" {
		t.Fatalf("alice's conversation is titled %q", title)
	}
	run(t, bob, "bob sees the conversation with alice@eu, with one unread",
		chromedp.WaitVisible(chromedp.CSS(`[data-conv="d:alice@eu"] .badge`)),
		click(`[data-conv="d:alice@eu"]`),
		chromedp.WaitVisible(chromedp.CSS(`.msg[data-id]`)),
	)
	if got := textOf(t, bob, `.msg[data-id] .text`); got != "hello from eu" {
		t.Fatalf("bob sees %q", got)
	}
	run(t, alice, "alice sees her message read in us, and bob online",
		chromedp.WaitVisible(chromedp.CSS(`.msg.mine[data-state="read"]`)),
		chromedp.WaitVisible(chromedp.CSS(`[data-conv="d:bob@us"] .dot[data-presence="online"]`)),
	)
	run(t, bob, "bob types", chromedp.SendKeys(chromedp.CSS(`#composer`), "typing"))
	run(t, alice, "alice sees bob typing", chromedp.Poll[chromedp.Void](`document.querySelector('.conversation .sub').textContent === 'bob@us is typing…'`, chromedp.WithPollingInterval(50*time.Millisecond)))
	run(t, bob, "bob replies", chromedp.SendKeys(chromedp.CSS(`#composer`), " and replying\n"),
		chromedp.WaitVisible(chromedp.CSS(`.msg.mine[data-id]`)))
	run(t, alice, "alice gets the reply",
		chromedp.WaitVisible(chromedp.CSS(`.msg:not(.mine)[data-id]`)),
	)
	if got := textOf(t, alice, `.msg:not(.mine)[data-id] .text`); !strings.Contains(got, "and replying") {
		t.Fatalf("alice sees %q", got)
	}

	// A picture crosses too: bob's page reads it from us, which fetched
	// it from eu.
	run(t, alice, "alice sends bob@us a picture",
		chromedp.SendKeys(chromedp.CSS(`#composer`), "the view"),
		chromedp.SetUploadFiles(chromedp.CSS(`#attach`), []string{writePNG(t, "view.png")}),
		chromedp.WaitVisible(chromedp.CSS(`.msg.mine[data-id] img.thumb:not(.blurred)`)),
	)
	run(t, bob, "bob sees the picture and opens it",
		chromedp.WaitVisible(chromedp.CSS(`.msg:not(.mine)[data-id] img.thumb:not(.blurred)`)),
		click(`.msg:not(.mine) .thumbbtn`),
		chromedp.WaitVisible(chromedp.CSS(`dialog.viewer img`)),
		chromedp.Poll[chromedp.Void](`document.querySelector('dialog.viewer img').naturalWidth === 64`, chromedp.WithPollingInterval(50*time.Millisecond)),
		click(`dialog.viewer .close`),
	)
	if src := eval[string](t, bob, `document.querySelector('.msg:not(.mine)[data-id] img.thumb').alt`); src != "view.png" {
		t.Fatalf("bob's picture is named %q", src)
	}

	// alice blocks bob@us from the conversation's header: his next
	// message is committed in us, refused in eu, and shows on his page
	// as not delivered.
	run(t, alice, "alice blocks bob@us",
		click(`#block-toggle[aria-pressed="false"]`),
		chromedp.WaitVisible(chromedp.CSS(`#block-toggle[aria-pressed="true"]`)),
	)
	run(t, bob, "bob writes again, and it comes back undeliverable",
		chromedp.SendKeys(chromedp.CSS(`#composer`), "still there?\n"),
		chromedp.WaitVisible(chromedp.CSS(`.msg.mine[data-state="undeliverable"]`)),
	)
	if got := textOf(t, bob, `.msg.mine[data-state="undeliverable"] .meta`); !strings.Contains(got, "not delivered: not accepted") {
		t.Fatalf("bob's refused message says %q", got)
	}
	if n := eval[int](t, alice, `[...document.querySelectorAll('.msg .text')].filter(e => e.textContent === 'still there?').length`); n != 0 {
		t.Fatalf("alice got the message of the user she blocked (%d)", n)
	}
}

// A chat with a user of another region while the link to it is down:
// the page showed the raw 503 of GET /user/bob@us. It says that region
// cannot be reached now and keeps the name typed, to try again; once the
// link is back the chat opens and a message goes.
func TestAChatWithAnotherRegionWhileItsLinkIsDown(t *testing.T) {
	eu, us, intoEU, intoUS := nodetest.StartRegionPairProxied(t, "eu", "us")
	us.NewUser(t, "bob")
	alice := browser(t)
	register(t, alice, eu.HTTPURL, "alice")
	intoEU.SetCut(true)
	intoUS.SetCut(true)
	run(t, alice, "alice asks for a chat with bob@us",
		chromedp.SendKeys(chromedp.CSS(`#new-chat`), "bob@us\n"),
		poll(`document.querySelector('.sidebar .error').textContent !== '' || document.querySelector('#conv-title').textContent === 'bob@us'`),
	)
	got := textOf(t, alice, `.sidebar .error`)
	kept := eval[string](t, alice, `document.querySelector('#new-chat').value`)
	if !strings.Contains(got, "us cannot be reached now") || kept != "bob@us" {
		t.Fatalf("the page says %q and keeps %q in the box, want that region us cannot be reached now and bob@us kept", got, kept)
	}
	intoEU.SetCut(false)
	intoUS.SetCut(false)
	aliceTok := eu.Token(t, "alice")
	nodetest.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		var p struct{ UserID string }
		return tryGetJSON(eu.HTTPURL, aliceTok, "/user/bob@us", &p)
	})
	run(t, alice, "the link is back: alice asks again, and writes",
		chromedp.SendKeys(chromedp.CSS(`#new-chat`), "\n"),
		poll(`document.querySelector('#conv-title').textContent === 'bob@us'`),
		chromedp.WaitEnabled(chromedp.CSS(`#composer`)),
		chromedp.SendKeys(chromedp.CSS(`#composer`), "back again\n"),
		chromedp.WaitVisible(chromedp.CSS(`.msg.mine[data-id]`)),
	)
	if got := textOf(t, alice, `.sidebar .error`); got != "" {
		t.Fatalf("the page still says %q", got)
	}
}
