package web_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/edgechat/edgechat/node/nodetest"
)

// setHidden makes the page see its tab hidden (or shown), as a browser
// does when the user switches tabs.
func setHidden(hidden bool) chromedp.Action[chromedp.Void] {
	return chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`Object.defineProperty(document, 'hidden', { configurable: true, get: () => %t });
		document.dispatchEvent(new Event('visibilitychange'))`, hidden))
}

// A message that arrives in the open conversation while its tab is
// hidden counts as unread (the title says so) until the user comes back
// to the tab; then it is read, on the server too (for the user's other
// devices, and the sender's "read").
func TestAMessageToTheOpenChatOfAHiddenTabIsReadOnReturn(t *testing.T) {
	n := nodetest.StartNode(t)
	n.NewUser(t, "alice")
	bobTok := n.NewUser(t, "bob")
	if err := postMessage(n.HTTPURL, bobTok, `{"to":"alice","cid":"h1","type":"text","body":"first"}`); err != nil {
		t.Fatal(err)
	}
	alice := browser(t)
	signIn(t, alice, n.HTTPURL, "alice")
	run(t, alice, "alice opens bob's chat, then her tab goes to the background",
		click(`[data-conv="d:bob"]`),
		poll(shows("first", false)),
		setHidden(true),
	)
	if err := postMessage(n.HTTPURL, bobTok, `{"to":"alice","cid":"h2","type":"text","body":"while hidden"}`); err != nil {
		t.Fatal(err)
	}
	run(t, alice, "it arrives, counted unread",
		poll(shows("while hidden", false)),
		poll(`document.title === '(1) edgechat'`),
	)
	unread := func() (int, error) {
		var res struct {
			Conversations []struct {
				Peer   string
				Unread int
			}
		}
		if err := json.Unmarshal(apiCall(t, "GET", n.HTTPURL+"/chat/conversations", n.Token(t, "alice"), ""), &res); err != nil {
			return 0, err
		}
		for _, c := range res.Conversations {
			if c.Peer == "bob" {
				return c.Unread, nil
			}
		}
		return 0, fmt.Errorf("no conversation with bob")
	}
	if k, err := unread(); err != nil || k != 1 {
		t.Fatalf("while the tab is hidden the server counts %d unread (%v), want 1", k, err)
	}
	run(t, alice, "alice comes back to the tab", setHidden(false), poll(`document.title === 'edgechat'`))
	if err := waitUntil(5*time.Second, 50*time.Millisecond, func() error {
		if k, err := unread(); err != nil || k != 0 {
			return fmt.Errorf("the server counts %d unread (%v)", k, err)
		}
		return nil
	}); err != nil {
		t.Fatalf("alice saw bob's message in the open chat: %v", err)
	}
}

// A tab in the background shows how many messages are unread in its
// title (what the user sees in the tab strip): the page drew it at the
// next animation frame, and a hidden tab runs none, so the title kept
// "edgechat" until the user came back to the tab.
func TestABackgroundTabsTitleCountsUnread(t *testing.T) {
	n := nodetest.StartNode(t)
	bobTok := n.NewUser(t, "bob")
	tab1, _ := twoTabs(t, n) // the second tab is in front
	if v := eval[string](t, tab1, `document.visibilityState`); v != "hidden" {
		t.Fatalf("the first tab is %s, want hidden", v)
	}
	if err := postMessage(n.HTTPURL, bobTok, `{"to":"alice","cid":"t1","type":"text","body":"first"}`); err != nil {
		t.Fatal(err)
	}
	run(t, tab1, "the tab in front counts bob's message", poll(`window.__w.document.title === '(1) edgechat'`))
	run(t, tab1, "and so does the tab behind it", poll(`document.title === '(1) edgechat'`))
}

// Two tabs of one browser: a conversation read in one is read in the
// other too. The other tab's badge and title kept counting what the
// user had read (until a reconnect or a reload), also each message that
// came into the conversation open in the first.
func TestAConversationReadInOneTabIsReadInTheOther(t *testing.T) {
	n := nodetest.StartNode(t)
	bobTok := n.NewUser(t, "bob")
	tab1, _ := twoTabs(t, n)
	if err := postMessage(n.HTTPURL, bobTok, `{"to":"alice","cid":"t1","type":"text","body":"first"}`); err != nil {
		t.Fatal(err)
	}
	const badges = `JSON.stringify([window.__w.document, document].map((d) => (d.querySelector('[data-conv="d:bob"] .badge') || {textContent: 'none'}).textContent + ' ' + d.title))`
	run(t, tab1, "both tabs count bob's message unread", poll(badges+` === '["1 (1) edgechat","1 (1) edgechat"]'`))
	run(t, tab1, "alice reads it in the tab in front",
		chromedp.Evaluate[chromedp.Void](`window.__w.document.querySelector('[data-conv="d:bob"]').click()`),
		poll(`[...window.__w.document.querySelectorAll('.msg[data-id]')].some((e) => e.textContent.includes('first'))`),
		poll(`window.__w.document.title === 'edgechat'`))
	run(t, tab1, "the tab behind no longer counts it", poll(badges+` === '[" edgechat"," edgechat"]'`))
	if err := postMessage(n.HTTPURL, bobTok, `{"to":"alice","cid":"t2","type":"text","body":"second"}`); err != nil {
		t.Fatal(err)
	}
	run(t, tab1, "bob's next message comes into the chat open in front, and the tab behind has it",
		poll(`[...window.__w.document.querySelectorAll('.msg[data-id]')].some((e) => e.textContent.includes('second'))`),
		poll(`document.querySelector('[data-conv="d:bob"] .conv-last').textContent === 'second'`))
	run(t, tab1, "it is read in both", poll(badges+` === '[" edgechat"," edgechat"]'`))
}

// Opening a conversation whose newest message is the user's own (sent
// from her phone after bob's) reads bob's messages before it, on the
// server too: the page cleared its badge but told the server nothing
// (it marked read only up to a message from the peer), so they counted
// unread again at the next reload and on every other device.
func TestOpeningAChatEndingWithMyOwnMessageReadsItOnTheServer(t *testing.T) {
	n := nodetest.StartNode(t)
	aliceTok := n.NewUser(t, "alice")
	bobTok := n.NewUser(t, "bob")
	for i, body := range []string{"one", "two"} {
		if err := postMessage(n.HTTPURL, bobTok, fmt.Sprintf(`{"to":"alice","cid":"b%d","type":"text","body":%q}`, i, body)); err != nil {
			t.Fatal(err)
		}
	}
	// alice answers from her phone, without reading there.
	if err := postMessage(n.HTTPURL, aliceTok, `{"to":"bob","cid":"a1","type":"text","body":"answered from my phone"}`); err != nil {
		t.Fatal(err)
	}
	unread := func() int {
		var res struct {
			Conversations []struct {
				Peer   string
				Unread int
			}
		}
		if err := json.Unmarshal(apiCall(t, "GET", n.HTTPURL+"/chat/conversations", aliceTok, ""), &res); err != nil {
			t.Fatal(err)
		}
		for _, c := range res.Conversations {
			if c.Peer == "bob" {
				return c.Unread
			}
		}
		return -1
	}
	if k := unread(); k != 2 {
		t.Fatalf("before alice reads, the server counts %d unread, want 2", k)
	}
	alice := browser(t)
	signIn(t, alice, n.HTTPURL, "alice")
	run(t, alice, "alice opens bob's chat on her laptop",
		poll(`document.querySelector('[data-conv="d:bob"] .badge').textContent === '2'`),
		click(`[data-conv="d:bob"]`),
		poll(shows("two", false)),
		poll(`document.title === 'edgechat'`),
	)
	if err := waitUntil(5*time.Second, 50*time.Millisecond, func() error {
		if k := unread(); k != 0 {
			return fmt.Errorf("the server counts %d unread", k)
		}
		return nil
	}); err != nil {
		t.Fatalf("alice read bob's messages: %v", err)
	}
}

// Signing out in one tab signs the browser's other tabs of the user out
// too. They went on showing her chats, live, for as long as their access
// tokens lasted (15 minutes): the next person at a shared computer found
// them in the other tab.
func TestSigningOutInOneTabSignsTheOthersOut(t *testing.T) {
	for _, button := range []string{`#sign-out`, `#sign-out-everywhere`} {
		n := nodetest.StartNode(t)
		bobTok := n.NewUser(t, "bob")
		tab1, _ := twoTabs(t, n)
		run(t, tab1, "alice signs out in the first tab ("+button+")", click(button), chromedp.WaitVisible(chromedp.CSS(`#username`)))
		if err := waitUntil(10*time.Second, 50*time.Millisecond, func() error {
			if out := eval[[]bool](t, tab1, signedOut); !out[1] {
				return fmt.Errorf("signed out (tab 1, tab 2): %v", out)
			}
			return nil
		}); err != nil {
			// What the other tab shows meanwhile.
			if postMessage(n.HTTPURL, bobTok, `{"to":"alice","cid":"so1","type":"text","body":"private words"}`) == nil {
				run(t, tab1, "the other tab shows bob's message", poll(`window.__w.document.body.innerText.includes('private words')`))
			}
			t.Fatalf("after %s in one tab: %v", button, err)
		}
	}
}

// Signed out in every tab, the user signs in again in one: the others
// come back signed in (the session cookie is the browser's), instead of
// each asking for the password again (each sign-in there a session more).
func TestSigningInInOneTabSignsTheOthersIn(t *testing.T) {
	n := nodetest.StartNode(t)
	tab1, _ := twoTabs(t, n)
	run(t, tab1, "alice signs out; both tabs show the sign-in form",
		click(`#sign-out`), chromedp.WaitVisible(chromedp.CSS(`#username`)),
		poll(signedOut+`.join() === 'true,true'`))
	run(t, tab1, "alice signs in again in the first tab",
		chromedp.SendKeys(chromedp.CSS(`#username`), "alice"),
		chromedp.SendKeys(chromedp.CSS(`#password`), nodetest.Password("alice")+"\n"),
		chromedp.WaitVisible(chromedp.CSS(`.state[data-state="online"]`)))
	if err := waitUntil(10*time.Second, 50*time.Millisecond, func() error {
		if !eval[bool](t, tab1, `!!window.__w.document.querySelector('.state[data-state="online"]')`) {
			return fmt.Errorf("the other tab is not signed in; signed out (tab 1, tab 2): %v", eval[[]bool](t, tab1, signedOut))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}
