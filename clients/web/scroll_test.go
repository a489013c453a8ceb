package web_test

import (
	"fmt"
	"net/http"
	"sync"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/edgechat/edgechat/node/nodetest"
)

// A conversation opens at its newest message whatever the one open
// before showed: alice reads back in bob's chat, then opens carol's,
// which showed at the place she had scrolled to in bob's (its newest
// messages out of sight, and new ones not followed).
func TestAConversationOpensAtItsNewestMessage(t *testing.T) {
	n := nodetest.StartNode(t)
	n.NewUser(t, "alice")
	for _, peer := range []string{"bob", "carol"} {
		tok := n.NewUser(t, peer)
		for i := 1; i <= 60; i++ {
			if err := postMessage(n.HTTPURL, tok, fmt.Sprintf(`{"to":"alice","cid":"%s-%d","type":"text","body":"%s %03d"}`, peer, i, peer, i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	alice := browser(t)
	signIn(t, alice, n.HTTPURL, "alice")
	const atBottom = `(() => { const el = document.querySelector('.messages'); return el.scrollHeight > el.clientHeight && el.scrollHeight - el.scrollTop - el.clientHeight < 40; })()`
	run(t, alice, "alice opens bob's chat at its newest message",
		click(`[data-conv="d:bob"]`),
		poll(shows("bob 060", false)),
		poll(atBottom),
	)
	run(t, alice, "she reads back a little",
		chromedp.Evaluate[chromedp.Void](`(() => { const el = document.querySelector('.messages'); el.scrollTop = el.scrollHeight / 2; })()`),
		poll(`!`+atBottom),
	)
	run(t, alice, "she opens carol's chat", click(`[data-conv="d:carol"]`), poll(shows("carol 060", false)),
		poll(`document.querySelectorAll('.msg[data-id]').length >= 50`))
	if !eval[bool](t, alice, atBottom) {
		t.Fatalf("carol's chat opened at %v, not at its newest message", eval[any](t, alice, `(() => { const el = document.querySelector('.messages'); return [el.scrollTop, el.scrollHeight, el.clientHeight]; })()`))
	}
}

// On a slow network, an older page of one conversation still on its way
// does not stop another's: alice scrolls back in bob's chat, opens
// carol's before bob's older messages came, and scrolls back there: it
// loaded nothing until bob's page came, and then set carol's scroll
// position from bob's.
func TestScrollingBackIsPerConversation(t *testing.T) {
	n := nodetest.StartNode(t)
	n.NewUser(t, "alice")
	for peer, total := range map[string]int{"bob": 130, "carol": 60} {
		tok := n.NewUser(t, peer)
		for i := 1; i <= total; i++ {
			if err := postMessage(n.HTTPURL, tok, fmt.Sprintf(`{"to":"alice","cid":"%s-%d","type":"text","body":"%s %03d"}`, peer, i, peer, i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	px := newCutProxy(t, n.HTTPURL)
	entered, release := make(chan struct{}, 1), make(chan struct{})
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(release) }) })
	px.setHook(func(r *http.Request) {
		if q := r.URL.Query(); r.URL.Path == "/chat/history" && q.Get("with") == "bob" && q.Get("before") != "" {
			select {
			case entered <- struct{}{}:
			default:
			}
			<-release
		}
	})
	alice := browser(t)
	signIn(t, alice, px.srv.URL, "alice")
	const scrollBack = `(() => { const el = document.querySelector('.messages'); el.scrollTop = 0; el.dispatchEvent(new Event('scroll')); return true; })()`
	run(t, alice, "alice opens bob's chat and scrolls back",
		click(`[data-conv="d:bob"]`),
		poll(`document.querySelectorAll('.msg[data-id]').length >= 50`),
		poll(scrollBack),
	)
	<-entered // bob's older page is on its way
	run(t, alice, "she opens carol's chat and scrolls back there",
		click(`[data-conv="d:carol"]`),
		poll(shows("carol 060", false)),
		poll(`document.querySelectorAll('.msg[data-id]').length >= 50`),
		poll(scrollBack+` && `+shows("carol 001", false)),
	)
	once.Do(func() { close(release) })
}
