package web_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/edgechat/edgechat/node/nodetest"
)

// chooseMute picks what of the open conversation's mute menu.
func chooseMute(what string) chromedp.Action[chromedp.Void] {
	return poll(`(() => { const s = document.querySelector('#mute'); if (!s || s.disabled) return false;
		s.value = ` + jsString(what) + `; s.dispatchEvent(new Event('change')); return true; })()`)
}

// A conversation can be muted from the page, for an hour, eight hours or
// until unmuted, and unmuted: the page had no control for the server's
// mutes at all, and its own notifications came for every message. Muted,
// the list shows it, the server has the mute (no pushes), and the page
// shows no notification for it (others still do); unmuted, they come
// again.
func TestMutingAConversationSilencesIt(t *testing.T) {
	n := nodetest.StartNode(t)
	aliceTok := n.NewUser(t, "alice")
	bobTok := n.NewUser(t, "bob")
	carolTok := n.NewUser(t, "carol")
	send := func(tok, body string) {
		t.Helper()
		if err := postMessage(n.HTTPURL, tok, fmt.Sprintf(`{"to":"alice","cid":%q,"type":"text","body":%q}`, body, body)); err != nil {
			t.Fatal(err)
		}
	}
	send(bobTok, "hello")
	send(carolTok, "hi")
	mutes := func() map[string]*time.Time {
		var res struct {
			Mutes []struct {
				Conversation string
				Until        *time.Time
			}
		}
		if err := json.Unmarshal(apiCall(t, "GET", n.HTTPURL+"/user/me/mutes", aliceTok, ""), &res); err != nil {
			t.Fatal(err)
		}
		out := map[string]*time.Time{}
		for _, m := range res.Mutes {
			out[m.Conversation] = m.Until
		}
		return out
	}
	alice := browser(t)
	signIn(t, alice, n.HTTPURL, "alice")
	run(t, alice, "alice mutes bob for an hour",
		click(`[data-conv="d:bob"]`),
		chooseMute("1h"),
		poll(`!!document.querySelector('[data-conv="d:bob"] .muted') && document.querySelector('#mute').dataset.muted === 'true'`))
	if m := mutes(); m["user:bob"] == nil || time.Until(*m["user:bob"]) < 50*time.Minute || time.Until(*m["user:bob"]) > 70*time.Minute {
		t.Fatalf("the server's mutes after muting bob for an hour: %v", m)
	}
	if textOf(t, alice, `[data-conv="d:carol"] .muted`) != "" {
		t.Fatal("carol's conversation shows muted")
	}
	run(t, alice, "her tab goes to the background (notifications counted)",
		chromedp.Evaluate[chromedp.Void](`window.__notes = [];
			window.Notification = class { constructor(title, o) { window.__notes.push(title + ': ' + o.body); } static get permission() { return 'granted'; } close() {} };`),
		setHidden(true))
	send(bobTok, "quiet one")
	send(carolTok, "loud one")
	run(t, alice, "both messages arrive",
		poll(`document.querySelector('[data-conv="d:bob"] .conv-last').textContent === 'quiet one' && document.querySelector('[data-conv="d:carol"] .conv-last').textContent === 'loud one'`))
	if notes := eval[[]string](t, alice, `window.__notes`); len(notes) != 1 || notes[0] != "carol: loud one" {
		t.Fatalf("notifications with bob muted: %q, want carol's only", notes)
	}
	run(t, alice, "alice mutes bob until she unmutes",
		setHidden(false), click(`[data-conv="d:bob"]`),
		chooseMute("always"),
		poll(`document.querySelector('#mute').dataset.muted === 'true' && document.querySelector('#mute option:checked').textContent === 'Muted'`))
	if m := mutes(); len(m) != 1 || m["user:bob"] != nil {
		if _, ok := m["user:bob"]; !ok || len(m) != 1 {
			t.Fatalf("the server's mutes after muting bob for good: %v", m)
		}
		t.Fatalf("bob's mute has an end: %v", m["user:bob"])
	}
	run(t, alice, "a reload shows it muted still",
		chromedp.Reload(), chromedp.WaitVisible(chromedp.CSS(`.state[data-state="online"]`)),
		poll(`!!document.querySelector('[data-conv="d:bob"] .muted')`))
	run(t, alice, "alice unmutes bob",
		click(`[data-conv="d:bob"]`),
		chooseMute(""),
		poll(`!document.querySelector('[data-conv="d:bob"] .muted') && document.querySelector('#mute').dataset.muted === 'false'`))
	if m := mutes(); len(m) != 0 {
		t.Fatalf("the server's mutes after unmuting: %v", m)
	}
	run(t, alice, "her tab goes to the background again",
		chromedp.Evaluate[chromedp.Void](`window.__notes = [];
			window.Notification = class { constructor(title, o) { window.__notes.push(title + ': ' + o.body); } static get permission() { return 'granted'; } close() {} };`),
		setHidden(true))
	send(bobTok, "heard again")
	run(t, alice, "bob's message shows a notification again", poll(`window.__notes.join() === 'bob: heard again'`))
}

// A conversation muted in one tab of the browser is muted in the others
// at once: they went on showing it unmuted and, in the background,
// notifying its messages until a reload.
func TestAMuteInOneTabHoldsInTheOthers(t *testing.T) {
	n := nodetest.StartNode(t)
	bobTok := n.NewUser(t, "bob")
	tab1, _ := twoTabs(t, n)
	if err := postMessage(n.HTTPURL, bobTok, `{"to":"alice","cid":"h1","type":"text","body":"hello"}`); err != nil {
		t.Fatal(err)
	}
	run(t, tab1, "alice mutes bob in the first tab",
		poll(`!!window.__w.document.querySelector('[data-conv="d:bob"]')`),
		click(`[data-conv="d:bob"]`),
		chooseMute("always"),
		poll(`!!document.querySelector('[data-conv="d:bob"] .muted')`))
	run(t, tab1, "the second tab shows it muted, and notifies nothing of it",
		poll(`!!window.__w.document.querySelector('[data-conv="d:bob"] .muted')`),
		chromedp.Evaluate[chromedp.Void](`(() => { const w = window.__w; w.__notes = [];
			w.Notification = class { constructor(title, o) { w.__notes.push(title + ': ' + o.body); } static get permission() { return 'granted'; } close() {} };
			Object.defineProperty(w.document, 'hidden', { configurable: true, get: () => true }); })()`))
	if err := postMessage(n.HTTPURL, bobTok, `{"to":"alice","cid":"h2","type":"text","body":"quiet please"}`); err != nil {
		t.Fatal(err)
	}
	run(t, tab1, "bob's message arrives in the second tab",
		poll(`window.__w.document.querySelector('[data-conv="d:bob"] .conv-last').textContent === 'quiet please'`))
	if notes := eval[[]string](t, tab1, `window.__w.__notes`); len(notes) != 0 {
		t.Fatalf("the second tab notified %q of a muted conversation", notes)
	}
}

// A mute made on another device (the phone) shows in the page after its
// next reconnect, as everything else it missed does: the page read the
// mutes only when it started, and went on notifying a conversation the
// user had muted elsewhere until a reload.
func TestAMuteFromAnotherDeviceShowsAfterAReconnect(t *testing.T) {
	n := nodetest.StartNode(t)
	aliceTok := n.NewUser(t, "alice")
	bobTok := n.NewUser(t, "bob")
	if err := postMessage(n.HTTPURL, bobTok, `{"to":"alice","cid":"h1","type":"text","body":"hello"}`); err != nil {
		t.Fatal(err)
	}
	px := newCutProxy(t, n.HTTPURL)
	alice := browser(t)
	signIn(t, alice, px.srv.URL, "alice")
	run(t, alice, "the page has caught up", chromedp.WaitVisible(chromedp.CSS(`.state[data-synced="true"]`)),
		poll(`!!document.querySelector('[data-conv="d:bob"]') && !document.querySelector('[data-conv="d:bob"] .muted')`))
	apiCall(t, "PUT", n.HTTPURL+"/user/me/mutes/user:bob", aliceTok, `{}`)
	px.cut()
	run(t, alice, "the page is offline", poll(`!document.querySelector('.state[data-state="online"]')`))
	px.heal()
	run(t, alice, "back online, it shows bob's conversation muted",
		chromedp.WaitVisible(chromedp.CSS(`.state[data-state="online"]`)),
		poll(`!!document.querySelector('[data-conv="d:bob"] .muted')`))
}
