package e2e_test

import (
	"context"
	"errors"
	"testing"
	"time"

	edgechat "github.com/edgechat/edgechat/clients/go"
	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
)

func TestDeleteAccountThroughTheSDK(t *testing.T) {
	n := nodetest.StartNode(t, nodetest.WithConfig(func(c *node.Config) { c.AccountDeleteGrace = 0 }))
	aliceTok, bobTok := n.NewUser(t, "alice"), n.NewUser(t, "bob")
	alice := dial(t, []string{n.WSURL}, "", aliceTok, nil, nil)
	bobIn := newInbox()
	bob := dial(t, []string{n.WSURL}, "", bobTok, bobIn, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := alice.Send(ctx, "bob", "hi bob"); err != nil {
		t.Fatal(err)
	}
	var ae *edgechat.APIError
	if _, err := bob.DeleteAccount(ctx, "not-bobs-password"); !errors.As(err, &ae) || ae.Status != 403 {
		t.Fatalf("wrong password: %v", err)
	}
	d, err := bob.DeleteAccount(ctx, nodetest.Password("bob"))
	if err != nil || d.UserID != "bob" || len(d.Kept) == 0 {
		t.Fatalf("delete: %+v %v", d, err)
	}
	testutil.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		p, err := alice.Profile(ctx, "bob")
		if err != nil || !p.Deleted || p.DisplayName != "deleted user" {
			return errors.New("bob's profile is not a tombstone yet")
		}
		msgs, _, err := alice.History(ctx, "bob", "", 50)
		if err != nil || len(msgs) != 0 {
			return errors.New("alice's history with bob is still there")
		}
		return nil
	})
	testutil.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if bob.Connected() {
			return errors.New("bob's client is still connected")
		}
		return nil
	})
}
