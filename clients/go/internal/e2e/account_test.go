package e2e_test

import (
	"context"
	"errors"
	"sync/atomic"
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

// A password change through the SDK: the client goes on with the new
// tokens (it is disconnected with every other session and comes back by
// itself, and its calls work), another device of the user is out for
// good, and the new password signs in.
func TestChangePasswordThroughTheSDK(t *testing.T) {
	n := nodetest.StartNode(t)
	n.NewUser(t, "alice")
	bobTok := n.NewUser(t, "bob")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	login := func() edgechat.Tokens {
		t.Helper()
		tk, err := edgechat.Login(ctx, n.HTTPURL, "alice", nodetest.Password("alice"))
		if err != nil {
			t.Fatal(err)
		}
		return tk
	}
	phoneTokens, laptopTokens := login(), login()
	phone := dial(t, []string{n.WSURL}, "", "", nil, func(o *edgechat.Options) {
		o.Device = "phone"
		o.TokenSource = edgechat.RefreshingTokenSource(n.HTTPURL, phoneTokens, nil)
	})
	var laptopDrops atomic.Int32
	laptop := dial(t, []string{n.WSURL}, "", "", nil, func(o *edgechat.Options) {
		o.Device = "laptop"
		o.TokenSource = edgechat.RefreshingTokenSource(n.HTTPURL, laptopTokens, nil)
		o.OnConnectionChange = func(up bool) {
			if !up {
				laptopDrops.Add(1)
			}
		}
	})
	bobIn := newInbox()
	dial(t, []string{n.WSURL}, "", bobTok, bobIn, nil)
	time.Sleep(5 * time.Millisecond) // the change's millisecond follows the sign-ins'

	var ae *edgechat.APIError
	if _, err := laptop.ChangePassword(ctx, "not-her-password", "new-password-1", nil); !errors.As(err, &ae) || ae.Status != 403 {
		t.Fatalf("wrong current password: %v", err)
	}
	if _, err := laptop.ChangePassword(ctx, nodetest.Password("alice"), "short", nil); !errors.As(err, &ae) || ae.Status != 400 {
		t.Fatalf("a new password that is too short: %v", err)
	}
	pc, err := laptop.ChangePassword(ctx, nodetest.Password("alice"), "new-password-1", nil)
	if err != nil || pc.Revoked < 2 || pc.AccessToken == "" || pc.RefreshToken == "" || pc.Expiry.IsZero() {
		t.Fatalf("change: %+v %v", pc, err)
	}
	// The phone is out for good: its tokens are refused, it cannot come back.
	testutil.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if phone.Connected() {
			return errors.New("the phone is still connected")
		}
		return nil
	})
	if _, err := edgechat.Refresh(ctx, n.HTTPURL, phoneTokens.RefreshToken); !errors.Is(err, edgechat.ErrUnauthorized) {
		t.Fatalf("the phone's refresh token after the change: %v", err)
	}
	// The laptop goes on: dropped with every session, reconnected with
	// the new token, it sends.
	testutil.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if laptopDrops.Load() == 0 || !laptop.Connected() {
			return errors.New("the laptop has not reconnected")
		}
		return nil
	})
	msg, err := laptop.Send(ctx, "bob", "changed my password")
	if err != nil {
		t.Fatalf("send after the change: %v", err)
	}
	bobIn.waitOnce(t, msg.ID)
	if _, err := edgechat.Login(ctx, n.HTTPURL, "alice", nodetest.Password("alice")); !errors.Is(err, edgechat.ErrUnauthorized) {
		t.Fatalf("the old password after the change: %v", err)
	}
	if _, err := edgechat.Login(ctx, n.HTTPURL, "alice", "new-password-1"); err != nil {
		t.Fatalf("the new password: %v", err)
	}
	if phone.Connected() {
		t.Fatal("the phone came back")
	}
}

// Sessions through the SDK: a client lists the user's sessions (its own
// marked, the other named by its device) and ends the other one, whose
// client is disconnected for good; a wrong ID is a 404.
func TestSessionsThroughTheSDK(t *testing.T) {
	n := nodetest.StartNode(t)
	n.NewUser(t, "alice")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	signedOut := map[string]*atomic.Int32{"phone": {}, "laptop": {}}
	clientOn := func(device string) *edgechat.Client {
		t.Helper()
		tk, err := edgechat.LoginDevice(ctx, n.HTTPURL, "alice", nodetest.Password("alice"), device)
		if err != nil {
			t.Fatal(err)
		}
		return dial(t, []string{n.WSURL}, "", "", nil, func(o *edgechat.Options) {
			o.Device = device
			o.TokenSource = edgechat.RefreshingTokenSource(n.HTTPURL, tk, nil)
			o.OnSignedOut = func(error) { signedOut[device].Add(1) }
		})
	}
	phone, laptop := clientOn("phone"), clientOn("laptop")
	sessions, err := laptop.Sessions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var phoneID string
	current := 0
	for _, s := range sessions {
		if s.Current {
			current++
			if s.Device != "laptop" {
				t.Fatalf("the current session is %+v", s)
			}
		}
		if s.Device == "phone" {
			phoneID = s.ID
		}
	}
	if current != 1 || phoneID == "" {
		t.Fatalf("sessions: %+v", sessions)
	}
	var ae *edgechat.APIError
	if err := laptop.EndSession(ctx, "not-a-session"); !errors.As(err, &ae) || ae.Status != 404 {
		t.Fatalf("ending an unknown session: %v", err)
	}
	if err := laptop.EndSession(ctx, phoneID); err != nil {
		t.Fatal(err)
	}
	testutil.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if phone.Connected() {
			return errors.New("the phone is still connected")
		}
		return nil
	})
	if !laptop.Connected() {
		t.Fatal("the laptop was disconnected")
	}
	if _, err := phone.Sessions(ctx); err == nil {
		t.Fatal("the ended session's client still calls the API")
	}
	// The phone's app is told, once; the laptop's is not.
	testutil.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if signedOut["phone"].Load() == 0 {
			return errors.New("the phone's OnSignedOut did not run")
		}
		return nil
	})
	time.Sleep(300 * time.Millisecond) // the phone keeps retrying meanwhile
	if n, l := signedOut["phone"].Load(), signedOut["laptop"].Load(); n != 1 || l != 0 {
		t.Fatalf("OnSignedOut ran %d times for the phone and %d for the laptop, want 1 and 0", n, l)
	}
}
