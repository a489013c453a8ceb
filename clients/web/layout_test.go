package web_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/edgechat/edgechat/node/nodetest"
)

// What other users write never pushes the page's controls out of view:
// a last message longer than the conversation list is wide (any
// sentence) pushed its unread badge out of the sidebar, and a group
// name of 64 characters without a space (or, on a phone, the composer
// itself) pushed the Send and Group info buttons past the window's
// right edge, and the group's info dialog scrolled sideways.
func TestLongTextKeepsTheControlsInView(t *testing.T) {
	n := nodetest.StartNode(t)
	n.NewUser(t, "alice")
	bobTok := n.NewUser(t, "bob")
	var g struct{ GroupID string }
	if err := json.Unmarshal(apiCall(t, "POST", n.HTTPURL+"/user/groups", bobTok, `{"name":"`+strings.Repeat("W", 64)+`","members":["alice"]}`), &g); err != nil || g.GroupID == "" {
		t.Fatalf("group: %v %+v", err, g)
	}
	apiCall(t, "POST", n.HTTPURL+"/chat/messages", bobTok, `{"group":"`+g.GroupID+`","cid":"g1","type":"text","body":"hi all"}`)
	apiCall(t, "POST", n.HTTPURL+"/chat/messages", bobTok, `{"to":"alice","cid":"d1","type":"text","body":"`+strings.Repeat("hello there, ", 20)+`"}`)
	alice := browser(t)
	signIn(t, alice, n.HTTPURL, "alice")
	// inView lists the elements of sel that are not wholly inside the
	// window and, when they are in the sidebar, inside the sidebar.
	const inView = `((sels) => { const out = []; for (const s of sels) { const e = document.querySelector(s); if (!e) { out.push(s + ' missing'); continue; }
		const b = e.getBoundingClientRect(); const side = e.closest('.sidebar'); const box = side ? side.getBoundingClientRect() : { left: 0, right: innerWidth };
		if (b.left < box.left || b.right > Math.min(box.right, innerWidth)) out.push(s + ' at ' + Math.round(b.left) + '-' + Math.round(b.right) + ' of ' + Math.round(box.left) + '-' + Math.round(Math.min(box.right, innerWidth))); }
		if (document.documentElement.scrollWidth > innerWidth) out.push('the page is ' + document.documentElement.scrollWidth + ' wide in ' + innerWidth);
		return out; })`
	for _, w := range []int64{1100, 390} {
		run(t, alice, fmt.Sprintf("a window %d wide, the list", w),
			chromedp.EmulateViewport(w, 800, chromedp.EmulateScale(1)),
			click(`.back`), // on a phone, back to the list
			poll(`!!document.querySelector('[data-conv="d:bob"] .badge:not(:empty)')`))
		if out := eval[[]string](t, alice, inView+`(['[data-conv="d:bob"] .badge'])`); len(out) != 0 {
			t.Errorf("%d wide, bob's unread badge is out of view: %q", w, out)
		}
		run(t, alice, fmt.Sprintf("a window %d wide, the group", w), click(`[data-conv="g:`+g.GroupID+`"]`), poll(shows("hi all", false)))
		if out := eval[[]string](t, alice, inView+`(['#group-info', '.composer button.primary', '#composer'])`); len(out) != 0 {
			t.Errorf("%d wide, the group's controls are out of view: %q", w, out)
		}
		// The group's info dialog wraps the name in its title (it
		// spilled out of the dialog, which scrolled sideways).
		run(t, alice, "the group's info", click(`#group-info`), poll(`!!document.querySelector('dialog.groupinfo li')`))
		if sizes := eval[[]int](t, alice, `(() => { const d = document.querySelector('dialog.groupinfo'); return [d.scrollWidth, d.clientWidth]; })()`); sizes[0] > sizes[1] {
			t.Errorf("%d wide, the group's info dialog is %d wide inside %d", w, sizes[0], sizes[1])
		}
		run(t, alice, "closed", click(`dialog.groupinfo .close`), poll(`!document.querySelector('dialog.groupinfo')`))
	}
}

// A contact's or a blocked user's display name (64 characters they
// chose, without a space) stays inside the sidebar: it pushed the
// blocked user's Unblock button out of sight.
func TestLongDisplayNamesStayInTheSidebar(t *testing.T) {
	n := nodetest.StartNode(t)
	aliceTok := n.NewUser(t, "alice")
	for _, u := range []string{"bob", "carol"} {
		apiCall(t, "PATCH", n.HTTPURL+"/user/me", n.NewUser(t, u), `{"displayName":"`+strings.Repeat("W", 64)+`"}`)
	}
	apiCall(t, "POST", n.HTTPURL+"/user/me/contacts", aliceTok, `{"uid":"bob"}`)
	apiCall(t, "POST", n.HTTPURL+"/user/me/blocks", aliceTok, `{"uid":"carol"}`)
	alice := browser(t)
	signIn(t, alice, n.HTTPURL, "alice")
	run(t, alice, "alice opens her contacts",
		click(`#contacts-panel summary`),
		poll(`!!document.querySelector('[data-contact="bob"]') && !!document.querySelector('[data-unblock="carol"]')`))
	out := eval[[]string](t, alice, `(() => { const side = document.querySelector('.sidebar').getBoundingClientRect(); const out = [];
		for (const s of ['[data-contact="bob"]', '[data-unblock="carol"]']) { const b = document.querySelector(s).getBoundingClientRect();
			if (b.left < side.left || b.right > side.right) out.push(s + ' at ' + Math.round(b.left) + '-' + Math.round(b.right) + ' of ' + Math.round(side.left) + '-' + Math.round(side.right)); }
		return out; })()`)
	if len(out) != 0 {
		t.Fatalf("out of the sidebar: %q", out)
	}
}

// On a phone (a narrow window shows the open conversation alone) an
// error of what the user did in the conversation is shown there: it was
// written under the new-chat form of the sidebar, which the narrow
// layout hides, so the action failed without a word.
func TestAnErrorShowsOnAPhone(t *testing.T) {
	n := nodetest.StartNode(t)
	n.NewUser(t, "bob")
	alice := browser(t)
	run(t, alice, "a phone's screen", chromedp.EmulateViewport(390, 800))
	register(t, alice, n.HTTPURL, "alice")
	run(t, alice, "alice opens bob's chat and sends a message longer than the server takes",
		chromedp.SendKeys(chromedp.CSS(`#new-chat`), "bob\n"),
		chromedp.WaitEnabled(chromedp.CSS(`#composer`)),
		chromedp.Evaluate[chromedp.Void](`(() => { const c = document.querySelector('#composer'); c.value = 'x'.repeat(9000); c.dispatchEvent(new Event('input')); })()`),
		click(`.composer button[type="submit"]`),
		poll(`[...document.querySelectorAll('.error')].some((e) => e.textContent !== '')`),
	)
	if w := eval[int](t, alice, `window.innerWidth`); w > 640 {
		t.Fatalf("the window is %d px wide, not a phone's", w)
	}
	shown := `[...document.querySelectorAll('.error')].filter((e) => e.offsetParent !== null && e.textContent !== '').map((e) => e.textContent)`
	if got := eval[[]string](t, alice, shown); len(got) != 1 || !strings.Contains(got[0], "too long") {
		t.Fatalf("errors the user sees: %q", got)
	}
	run(t, alice, "back in the list, the error shows once there too", click(`.conversation .back`))
	if got := eval[[]string](t, alice, shown); len(got) != 1 {
		t.Fatalf("errors the user sees in the list: %q", got)
	}
}
