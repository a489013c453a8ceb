package web_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/edgechat/edgechat/node/nodetest"
)

// getJSON reads path of the node's API as the owner of tok into out.
func getJSON(t *testing.T, base, tok, path string, out any) {
	t.Helper()
	if err := tryGetJSON(base, tok, path, out); err != nil {
		t.Fatal(err)
	}
}

// tryGetJSON is getJSON that returns what went wrong.
func tryGetJSON(base, tok, path string, out any) error {
	req, err := http.NewRequest(http.MethodGet, base+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", path, res.Status)
	}
	if err := json.NewDecoder(res.Body).Decode(out); err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	return nil
}

// poll waits until the page's js is true.
func poll(js string) chromedp.Action[chromedp.Void] {
	return chromedp.Poll[chromedp.Void](js, chromedp.WithPollingInterval(30*time.Millisecond))
}

// Contacts and blocking from a direct conversation's header: bob adds
// alice as a contact (she shows in his contacts list, and on the
// server), removes her, then blocks her: her next message is refused and
// her page says so (the HTTP API answers 403 to the same); once bob
// unblocks her from his blocked list, her messages arrive again.
func TestContactsAndBlocking(t *testing.T) {
	n := nodetest.StartNode(t)
	alice, bob := browser(t), browser(t)
	register(t, alice, n.HTTPURL, "alice")
	register(t, bob, n.HTTPURL, "bob")
	run(t, alice, "alice writes to bob",
		chromedp.SendKeys(chromedp.CSS(`#new-chat`), "bob\n"),
		chromedp.WaitEnabled(chromedp.CSS(`#composer`)),
		chromedp.SendKeys(chromedp.CSS(`#composer`), "hello bob\n"),
		chromedp.WaitVisible(chromedp.CSS(`.msg.mine[data-id]`)),
	)
	run(t, bob, "bob opens the chat and adds alice as a contact",
		click(`[data-conv="d:alice"]`),
		chromedp.WaitVisible(chromedp.CSS(`.msg[data-id]`)),
		click(`#contact-toggle[aria-pressed="false"]`),
		chromedp.WaitVisible(chromedp.CSS(`#contact-toggle[aria-pressed="true"]`)),
		click(`#contacts-panel summary`),
		chromedp.WaitVisible(chromedp.CSS(`[data-contact="alice"]`)),
	)
	if unnamed := eval[[]string](t, bob, accessibleNames); len(unnamed) != 0 {
		t.Fatalf("controls without an accessible name: %q", unnamed)
	}
	bobTok := n.Token(t, "bob")
	var contacts struct{ Contacts []struct{ UserID string } }
	getJSON(t, n.HTTPURL, bobTok, "/user/me/contacts", &contacts)
	if len(contacts.Contacts) != 1 || contacts.Contacts[0].UserID != "alice" {
		t.Fatalf("bob's contacts on the server: %+v", contacts)
	}

	run(t, bob, "bob removes the contact and blocks alice",
		click(`#contact-toggle[aria-pressed="true"]`),
		chromedp.WaitVisible(chromedp.CSS(`#contact-toggle[aria-pressed="false"]`)),
		poll(`document.querySelector('[data-contact="alice"]') === null`),
		click(`#block-toggle[aria-pressed="false"]`),
		chromedp.WaitVisible(chromedp.CSS(`#block-toggle[aria-pressed="true"]`)),
		chromedp.WaitVisible(chromedp.CSS(`[data-unblock="alice"]`)),
	)
	getJSON(t, n.HTTPURL, bobTok, "/user/me/contacts", &contacts)
	if len(contacts.Contacts) != 0 {
		t.Fatalf("bob's contacts on the server after removing: %+v", contacts)
	}
	if err := postMessage(n.HTTPURL, n.Token(t, "alice"), `{"to":"bob","cid":"http-1","type":"text","body":"over http"}`); err == nil || !strings.Contains(err.Error(), "403") {
		t.Fatalf("POST /chat/messages to a user who blocked the sender: %v, want 403", err)
	}
	run(t, alice, "alice's message is refused, and her page says so",
		chromedp.SendKeys(chromedp.CSS(`#composer`), "are you there?\n"),
		chromedp.WaitVisible(chromedp.CSS(`.msg.mine[data-state="failed"]`)),
	)
	if got := textOf(t, alice, `.msg.mine[data-state="failed"] .meta`); !strings.Contains(got, "bob does not accept your messages") {
		t.Fatalf("the refused message says %q", got)
	}
	var hist struct{ Messages []struct{ Body string } }
	getJSON(t, n.HTTPURL, bobTok, "/chat/history?with=alice", &hist)
	if len(hist.Messages) != 1 || hist.Messages[0].Body != "hello bob" {
		t.Fatalf("bob's history with alice while she is blocked: %+v", hist)
	}

	run(t, bob, "bob unblocks alice from his blocked list",
		click(`[data-unblock="alice"]`),
		chromedp.WaitVisible(chromedp.CSS(`#block-toggle[aria-pressed="false"]`)),
		poll(`document.querySelector('[data-unblock]') === null`),
	)
	run(t, alice, "alice writes again", chromedp.SendKeys(chromedp.CSS(`#composer`), "back again\n"),
		poll(`[...document.querySelectorAll('.msg.mine[data-id]')].some(e => e.textContent.includes('back again'))`))
	run(t, bob, "bob gets it live",
		poll(`[...document.querySelectorAll('.msg[data-id] .text')].some(e => e.textContent === 'back again')`))
}
