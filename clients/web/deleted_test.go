package web_test

import (
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
	nodetest.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		var p struct{ Deleted bool }
		if err := tryGetJSON(n.HTTPURL, aliceTok, "/user/bob", &p); err != nil {
			return err
		}
		if !p.Deleted {
			return fmt.Errorf("bob not erased yet")
		}
		return nil
	})

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
