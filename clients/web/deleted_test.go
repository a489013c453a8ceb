package web_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
)

// A chat with a deleted user is not opened: GET /user/{id} answers the
// erased account's tombstone (200, deleted: true), and the page said
// nothing and opened an empty conversation whose every message the
// server then refused as to an unknown user. It says the account was
// deleted instead.
func TestAChatWithADeletedUserIsNotOpened(t *testing.T) {
	n := nodetest.StartNode(t, nodetest.WithConfig(func(c *node.Config) { c.AccountDeleteGrace = 0 }))
	aliceTok := n.NewUser(t, "alice")
	bobTok := n.NewUser(t, "bob")
	apiCall(t, "DELETE", n.HTTPURL+"/user/me", bobTok, fmt.Sprintf(`{"password":%q}`, nodetest.Password("bob")))
	waitMarkedDeleted(t, n, aliceTok, "bob")

	alice := browser(t)
	signIn(t, alice, n.HTTPURL, "alice")
	run(t, alice, "alice asks for a chat with bob",
		chromedp.SendKeys(chromedp.CSS(`#new-chat`), "bob\n"),
		poll(`document.querySelector('.sidebar .error').textContent !== '' || document.querySelector('#conv-title').textContent === 'bob'`),
	)
	if title := textOf(t, alice, `#conv-title`); title == "bob" {
		t.Fatalf("a chat with the deleted bob was opened (error shown: %q)", textOf(t, alice, `.sidebar .error`))
	}
	if got := textOf(t, alice, `.sidebar .error`); !strings.Contains(got, "deleted") {
		t.Fatalf("the page says %q, want that bob's account was deleted", got)
	}
	if convs := eval[int](t, alice, `document.querySelectorAll('[data-conv="d:bob"]').length`); convs != 0 {
		t.Fatalf("the list shows a conversation with the deleted bob")
	}
}

// A group message of a user whose account was erased shows its sender
// as a deleted account, as GET /user/{uid} answers it (the tombstone:
// "deleted user", deleted: true) and as the 202 of the deletion tells
// the user ("members see their sender as \"deleted user\""): the page
// showed the user ID, in the message and in the list's last message,
// as if the account were there.
func TestAGroupMessageOfAnErasedUserShowsADeletedAccount(t *testing.T) {
	n := nodetest.StartNode(t, nodetest.WithConfig(func(c *node.Config) { c.AccountDeleteGrace = 0 }))
	aliceTok := n.NewUser(t, "alice")
	bobTok := n.NewUser(t, "bob")
	var g struct{ GroupID string }
	if err := json.Unmarshal(apiCall(t, "POST", n.HTTPURL+"/user/groups", aliceTok, `{"name":"team","members":["bob"]}`), &g); err != nil || g.GroupID == "" {
		t.Fatalf("create the group: %v", err)
	}
	apiCall(t, "POST", n.HTTPURL+"/chat/messages", bobTok, `{"group":"`+g.GroupID+`","cid":"b1","type":"text","body":"bye all"}`)
	apiCall(t, "DELETE", n.HTTPURL+"/user/me", bobTok, fmt.Sprintf(`{"password":%q}`, nodetest.Password("bob")))
	nodetest.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		var p struct {
			Deleted     bool
			DisplayName string
		}
		if err := tryGetJSON(n.HTTPURL, aliceTok, "/user/bob", &p); err != nil {
			return err
		}
		if !p.Deleted || p.DisplayName != "deleted user" {
			return fmt.Errorf("bob not erased yet: %+v", p)
		}
		return nil
	})

	alice := browser(t)
	signIn(t, alice, n.HTTPURL, "alice")
	run(t, alice, "alice opens the group",
		click(`[data-conv="g:`+g.GroupID+`"]`),
		chromedp.WaitVisible(chromedp.CSS(`.msg[data-id] .from`)))
	nodetest.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		from := textOf(t, alice, `.msg[data-id] .from`)
		last := eval[string](t, alice, `document.querySelector('[data-conv="g:`+g.GroupID+`"]').textContent`)
		if from != "deleted user" || !strings.Contains(last, "deleted user: bye all") {
			return fmt.Errorf("the message's sender shows as %q and the list's last message as %q, want \"deleted user\"", from, last)
		}
		return nil
	})
}

// A message written in an existing chat with a user who has since
// deleted their account: the server refuses it as to an unknown user
// (0x90), and the page said "refused (0x90)". It says the account was
// deleted, with no Retry (sending again would be refused again).
func TestAMessageToAUserWhoDeletedTheirAccountSaysSo(t *testing.T) {
	n := nodetest.StartNode(t, nodetest.WithConfig(func(c *node.Config) { c.AccountDeleteGrace = 0 }))
	aliceTok := n.NewUser(t, "alice")
	bobTok := n.NewUser(t, "bob")
	if err := postMessage(n.HTTPURL, bobTok, `{"to":"alice","cid":"b1","type":"text","body":"hi alice"}`); err != nil {
		t.Fatal(err)
	}
	alice := browser(t)
	signIn(t, alice, n.HTTPURL, "alice")
	run(t, alice, "alice opens bob's chat", click(`[data-conv="d:bob"]`), poll(shows("hi alice", false)))
	apiCall(t, "DELETE", n.HTTPURL+"/user/me", bobTok, fmt.Sprintf(`{"password":%q}`, nodetest.Password("bob")))
	waitMarkedDeleted(t, n, aliceTok, "bob")
	run(t, alice, "alice writes to bob",
		chromedp.SendKeys(chromedp.CSS(`#composer`), "are you there?\n"),
		chromedp.WaitVisible(chromedp.CSS(`.msg.mine[data-state="failed"]`)))
	got := textOf(t, alice, `.msg.mine[data-state="failed"] .meta`)
	retries := eval[int](t, alice, `document.querySelectorAll('.msg.mine[data-state="failed"] .retry').length`)
	if !strings.Contains(got, "deleted") || retries != 0 {
		t.Fatalf("the message not sent says %q with %d Retry buttons, want that bob deleted their account and no Retry", got, retries)
	}
}

// waitMarkedDeleted waits until GET /user/{uid}, asked with tok, marks
// uid deleted.
func waitMarkedDeleted(t *testing.T, n *nodetest.Node, tok, uid string) {
	t.Helper()
	nodetest.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		var p struct{ Deleted bool }
		if err := tryGetJSON(n.HTTPURL, tok, "/user/"+uid, &p); err != nil {
			return err
		}
		if !p.Deleted {
			return fmt.Errorf("%s not marked deleted yet", uid)
		}
		return nil
	})
}
