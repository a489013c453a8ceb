package web_test

import (
	"encoding/json"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/edgechat/edgechat/node/nodetest"
)

// On a phone (a narrow window shows the open conversation alone), a
// message that arrives after the user went back to the conversation list
// is unread: the back button only hid the conversation, which stayed the
// open one, so what came into it was marked read at once (on the server
// too, and the sender saw it "read") and the list showed no badge,
// though the user never saw it.
func TestAMessageAfterGoingBackOnAPhoneIsUnread(t *testing.T) {
	n := nodetest.StartNode(t)
	bobTok := n.NewUser(t, "bob")
	alice := browser(t)
	run(t, alice, "a phone's screen", chromedp.EmulateViewport(390, 800))
	register(t, alice, n.HTTPURL, "alice")
	run(t, alice, "alice opens bob's chat, then goes back to the list",
		chromedp.SendKeys(chromedp.CSS(`#new-chat`), "bob\n"),
		chromedp.WaitEnabled(chromedp.CSS(`#composer`)),
		click(`.conversation .back`),
		chromedp.WaitVisible(chromedp.CSS(`#new-chat`)),
	)
	if w := eval[int](t, alice, `window.innerWidth`); w > 640 {
		t.Fatalf("the window is %d px wide, not a phone's", w)
	}
	if err := postMessage(n.HTTPURL, bobTok, `{"to":"alice","cid":"p1","type":"text","body":"are you there?"}`); err != nil {
		t.Fatal(err)
	}
	run(t, alice, "bob's message arrives in the list",
		poll(`(document.querySelector('[data-conv="d:bob"] .conv-last') || {}).textContent === 'are you there?'`),
	)
	if badge := textOf(t, alice, `[data-conv="d:bob"] .badge`); badge != "1" {
		t.Fatalf("the list shows bob's chat with the badge %q, want 1 unread (the chat is not shown)", badge)
	}
	var res struct {
		Conversations []struct {
			Peer   string
			Unread int
		}
	}
	if err := json.Unmarshal(apiCall(t, "GET", n.HTTPURL+"/chat/conversations", n.Token(t, "alice"), ""), &res); err != nil {
		t.Fatal(err)
	}
	for _, c := range res.Conversations {
		if c.Peer == "bob" && c.Unread != 1 {
			t.Fatalf("the server counts %d unread in bob's chat, want 1", c.Unread)
		}
	}
	run(t, alice, "alice opens the chat: it is read",
		click(`[data-conv="d:bob"]`),
		poll(shows("are you there?", false)),
		poll(`(document.querySelector('[data-conv="d:bob"] .badge') || {}).textContent === ''`),
	)
}
