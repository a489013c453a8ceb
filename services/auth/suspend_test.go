package auth

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/wire"
)

// An admin suspends an account: at the commit the user is signed out
// everywhere, on every node, and while it lasts nothing signs them in
// (password or refresh) nor accepts a token of them, not even
// one minted after; the right password learns why (403
// account_suspended), a wrong one only that it is wrong. Lifting the
// suspension lets them sign in again. Other users are untouched.
func TestSuspendedAccount(t *testing.T) {
	e := newEnv(t)
	follower, onFollower := e.follower()
	var kicked []string
	e.svc.OnSignedOutEverywhere(func(uid string) { kicked = append(kicked, uid) })
	e.register("mallory", "password1")
	e.register("alice", "password2")
	tk, alices := e.login("mallory", "password1"), e.login("alice", "password2")
	ctx := context.Background()
	e.clock.Advance(time.Second)

	for _, c := range []struct {
		path, body string
		status     int
	}{
		{"/admin/users/nobody/suspended", `{"suspended":true}`, 404},
		{"/admin/users/Not!A.Name/suspended", `{"suspended":true}`, 400},
		{"/admin/users/mallory/suspended", `{}`, 400},
		{"/admin/users/mallory/suspended", `{"suspended":"yes"}`, 400},
	} {
		if r := e.as("root", http.MethodPut, c.path, c.body); r.Code != c.status {
			t.Fatalf("PUT %s %s: %d %s", c.path, c.body, r.Code, r.Body)
		}
	}
	if _, err := e.svc.VerifyAccessToken(tk.AccessToken); err != nil {
		t.Fatalf("mallory's token before the suspension: %v", err)
	}
	r := e.as("root", http.MethodPut, "/admin/users/mallory/suspended", `{"suspended":true}`)
	if r.Code != http.StatusOK {
		t.Fatalf("suspend: %d %s", r.Code, r.Body)
	}
	for name, s := range map[string]*Service{"leader": e.svc, "follower": onFollower} {
		if !s.Suspended("mallory") || s.Suspended("alice") {
			t.Fatalf("the %s's suspended set: mallory %v, alice %v", name, s.Suspended("mallory"), s.Suspended("alice"))
		}
	}
	if len(kicked) == 0 || kicked[0] != "mallory" {
		t.Fatalf("sessions closed for %v", kicked)
	}
	minted, _ := e.svc.MintAccessToken("mallory", false) // an operator's token, minted after
	for name, tok := range map[string]string{"old": tk.AccessToken, "minted": minted} {
		if _, err := e.svc.VerifyAccessToken(tok); !errors.Is(err, wire.ErrBadToken) {
			t.Fatalf("mallory's %s token while suspended: %v", name, err)
		}
	}
	if _, err := e.svc.Refresh(ctx, tk.RefreshToken); !errors.Is(err, ErrRefreshInvalid) {
		t.Fatalf("mallory's refresh while suspended: %v", err)
	}
	if r := e.post("/auth/login", map[string]string{"username": "mallory", "password": "password1"}); r.Code != http.StatusForbidden || r.errCode() != CodeSuspended {
		t.Fatalf("mallory's login while suspended: %d %s", r.Code, r.Body)
	}
	if r := e.post("/auth/login", map[string]string{"username": "mallory", "password": "wrong-pass"}); r.Code != http.StatusUnauthorized {
		t.Fatalf("a wrong password while suspended: %d %s", r.Code, r.Body)
	}
	if _, err := e.svc.VerifyAccessToken(alices.AccessToken); err != nil {
		t.Fatalf("alice's token: %v", err)
	}
	var looked struct {
		Suspended bool `json:"suspended"`
	}
	if r := e.as("root", http.MethodGet, "/admin/users/mallory", ""); r.Code != http.StatusOK || json.Unmarshal(r.Body, &looked) != nil || !looked.Suspended {
		t.Fatalf("the admin look-up: %d %s", r.Code, r.Body)
	}
	// A node that starts now knows the suspension.
	restarted := e.restartedOn(follower.DB(), t.TempDir()+"/keys")
	if !restarted.Suspended("mallory") {
		t.Fatal("a restarted node forgot the suspension")
	}

	// Lifted: she signs in again.
	if r := e.as("root", http.MethodPut, "/admin/users/mallory/suspended", `{"suspended":false}`); r.Code != http.StatusOK {
		t.Fatalf("lift: %d %s", r.Code, r.Body)
	}
	if onFollower.Suspended("mallory") {
		t.Fatal("the follower still has mallory suspended")
	}
	again := e.login("mallory", "password1")
	if _, err := e.svc.VerifyAccessToken(again.AccessToken); err != nil {
		t.Fatalf("mallory's token after the suspension was lifted: %v", err)
	}
}

// A federated sign-in of a suspended account is refused too (the issue
// of tokens checks the suspension).
func TestSuspendedFederatedAccount(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	tk, err := e.svc.SignInFederated(ctx, fid("s-1", "dora"))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.svc.SetSuspended(ctx, tk.UserID, true); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.SignInFederated(ctx, fid("s-1", "dora")); !errors.Is(err, ErrSuspended) {
		t.Fatalf("a suspended account's provider sign-in: %v", err)
	}
	if err := e.svc.SetSuspended(ctx, tk.UserID, false); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.SignInFederated(ctx, fid("s-1", "dora")); err != nil {
		t.Fatalf("after the suspension was lifted: %v", err)
	}
}
