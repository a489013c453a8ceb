package auth

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"sync"
	"testing"

	"github.com/edgechat/edgechat/cluster/fsm/fsmtest"
	"github.com/edgechat/edgechat/internal/wire"
)

func fid(sub, username string) FederatedIdentity {
	return FederatedIdentity{Provider: "corp", Issuer: "https://sso.example.com", Subject: sub, Username: username,
		DisplayName: "The " + username, Picture: "https://sso.example.com/p.png", Email: username + "@example.com"}
}

func TestFederatedSignInCreatesOnceAndNeverByUsernameAlone(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	tk, err := e.svc.SignInFederated(ctx, fid("s-1", "Alice"))
	if err != nil || tk.UserID != "alice" {
		t.Fatalf("first sign-in: %+v %v", tk, err)
	}
	if name, ok := e.profiles.get("alice"); !ok || name != "The Alice" {
		t.Fatalf("profile %q %v", name, ok)
	}
	// The same subject again: the same account, no new profile write.
	calls := e.profiles.calls
	if tk, err := e.svc.SignInFederated(ctx, fid("s-1", "renamed")); err != nil || tk.UserID != "alice" {
		t.Fatalf("again: %+v %v", tk, err)
	}
	if name, _ := e.profiles.get("alice"); e.profiles.calls != calls || name != "The Alice" {
		t.Fatalf("a second sign-in wrote the profile again (%d writes, name %q)", e.profiles.calls-calls, name)
	}
	// Another issuer with the same subject and username: another account.
	other := fid("s-1", "alice")
	other.Issuer = "https://other.example.com"
	if tk, err := e.svc.SignInFederated(ctx, other); err != nil || tk.UserID != "alice2" {
		t.Fatalf("same sub at another issuer: %+v %v", tk, err)
	}
	// A password user "carol" exists: a provider's carol gets carol2.
	e.register("carol", "password-carol")
	if tk, err := e.svc.SignInFederated(ctx, fid("s-3", "carol")); err != nil || tk.UserID != "carol2" {
		t.Fatalf("clash with a password user: %+v %v", tk, err)
	}
	// A federated account has no password: login refuses it.
	if r := e.post("/auth/login", map[string]string{"username": "alice", "password": ""}); r.Code != http.StatusUnauthorized {
		t.Fatalf("password login of a federated account: %d %s", r.Code, r.Body)
	}
	links, err := e.svc.Identities("alice")
	if err != nil || len(links) != 1 || links[0].Email != "Alice@example.com" || links[0].Picture == "" {
		t.Fatalf("links %+v %v", links, err)
	}
}

func TestFederatedSignInRefusesBadIdentities(t *testing.T) {
	e := newEnv(t)
	for name, id := range map[string]FederatedIdentity{
		"no subject":   fid("", "x"),
		"no issuer":    {Subject: "s", Username: "x"},
		"long subject": fid(string(make([]byte, 300)), "x"),
	} {
		if _, err := e.svc.SignInFederated(context.Background(), id); !errors.Is(err, ErrBadIdentity) {
			t.Errorf("%s: %v, want ErrBadIdentity", name, err)
		}
	}
	if n, _ := e.svc.CountAccounts(); n != 0 {
		t.Fatalf("%d accounts", n)
	}
	// Malformed commands are refused by the FSM and change nothing.
	for _, payload := range []string{`{`, `{"iss":"i","sub":"s","base":"Not Valid"}`, `{"iss":"","sub":"s","base":"abc"}`} {
		if _, err := e.prop.Propose(context.Background(), wire.CmdIdentitySignIn, []byte(payload)); !errors.Is(err, errBadCommand) {
			t.Errorf("%s: %v, want errBadCommand", payload, err)
		}
	}
	if d := fsmtest.Dump(t, e.db, "r/auth/"); len(d) != 0 {
		for k := range d {
			if k[:len(prefixKey)] != prefixKey {
				t.Fatalf("state after refusals: %v", d)
			}
		}
	}
}

func TestIdentitySignInIsIdempotentInLogOrder(t *testing.T) {
	e := newEnv(t)
	// Two proposals of the same first sign-in (two nodes racing): the
	// second finds the first's link.
	cmd, _ := json.Marshal(identitySignInCmd{Issuer: "https://i", Subject: "s", Provider: "p", Base: "zed", At: e.clock.Now()})
	var wg sync.WaitGroup
	results := make([]identitySignInResult, 8)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v, err := e.prop.Propose(context.Background(), wire.CmdIdentitySignIn, cmd)
			if err != nil {
				t.Error(err)
				return
			}
			results[i] = v.(identitySignInResult)
		}()
	}
	wg.Wait()
	created := 0
	for _, r := range results {
		if r.Account.UID != "zed" {
			t.Fatalf("result %+v", r)
		}
		if r.Created {
			created++
		}
	}
	if created != 1 {
		t.Fatalf("%d proposals say they created the account, want 1", created)
	}
	if n, _ := e.svc.CountAccounts(); n != 1 {
		t.Fatalf("%d accounts", n)
	}
}

func TestFederatedSignInAfterDeletionMakesANewAccount(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.DeleteGrace = 0 })
	ctx := context.Background()
	tk, err := e.svc.SignInFederated(ctx, fid("s-1", "dora"))
	if err != nil || tk.UserID != "dora" {
		t.Fatal(tk, err)
	}
	// Delete through the replicated command (the HTTP route asks for a password).
	if _, err := e.svc.propose(ctx, wire.CmdAccountDelete, accountDeleteCmd{V: commandVersion, UID: "dora", At: e.clock.Now(), DeleteAt: e.clock.Now()}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.VerifyAccessToken(tk.AccessToken); err == nil {
		t.Fatal("the deleted account's token still verifies")
	}
	tk2, err := e.svc.SignInFederated(ctx, fid("s-1", "dora"))
	if err != nil || tk2.UserID != "dora2" {
		t.Fatalf("sign-in after deletion: %+v %v (the old ID stays reserved)", tk2, err)
	}
	if links, _ := e.svc.Identities("dora"); len(links) != 0 {
		t.Fatalf("the deleted account keeps links %+v", links)
	}
	// Erasing dora2 removes its link too: no trace of the subject stays.
	if _, err := e.svc.propose(ctx, wire.CmdAccountDelete, accountDeleteCmd{V: commandVersion, UID: "dora2", At: e.clock.Now(), DeleteAt: e.clock.Now()}); err != nil {
		t.Fatal(err)
	}
	e.svc.EraseDue(ctx)
	e.svc.EraseDue(ctx)
	for _, prefix := range []string{prefixIdent, prefixUserIdent} {
		if d := fsmtest.Dump(t, e.db, prefix); len(d) != 0 {
			t.Fatalf("after erasure, %s holds %v", prefix, d)
		}
	}
}

func TestUsernameCandidate(t *testing.T) {
	for in, want := range map[string]string{
		"Alice": "alice", "bob.smith": "bob.smith", "Jo": "jo_", "1234-abcd": "u1234-abcd", "": "fallback",
		"__x__": "x__", "ÄÖÜ": "user", "a very long name that goes on and on": "a_very_long_name_that_goes_on_an",
	} {
		if got := UsernameCandidate(in, "fallback"); got != want {
			t.Errorf("UsernameCandidate(%q) = %q, want %q", in, got, want)
		}
	}
	if got := withSuffix("abcdefghijklmnopqrstuvwxyzabcdef", 12); got != "abcdefghijklmnopqrstuvwxyzabcd12" {
		t.Fatalf("withSuffix: %q", got)
	}
}

func FuzzUsernameCandidate(f *testing.F) {
	for _, s := range []string{"Alice", "", "ü", "1", "a.b-c_d", "....", "user@example.com"} {
		f.Add(s, "sub-1")
	}
	f.Fuzz(func(t *testing.T, claim, sub string) {
		got := UsernameCandidate(claim, sub)
		if err := wire.ValidUserID(got); err != nil {
			t.Fatalf("UsernameCandidate(%q, %q) = %q: %v", claim, sub, got, err)
		}
		for i := 1; i < 2000; i += 37 {
			if err := wire.ValidUserID(withSuffix(got, i)); err != nil {
				t.Fatalf("withSuffix(%q, %d) = %q: %v", got, i, withSuffix(got, i), err)
			}
		}
	})
}

// FuzzApplyIdentitySignIn: any payload is applied or refused (writing
// nothing); an applied one names a valid, unreserved account, and applying
// it again finds the same account without creating one.
func FuzzApplyIdentitySignIn(f *testing.F) {
	f.Add([]byte(`{"iss":"https://i","sub":"s","provider":"p","base":"abc","at":"2026-01-01T00:00:00Z"}`))
	f.Add([]byte(`{"iss":"https://i","sub":"s2","base":"system"}`))
	f.Add([]byte(`{}`))
	h := fsmtest.New(f)
	h.FSM.Register(wire.CmdIdentitySignIn, applyIdentitySignIn)
	f.Fuzz(func(t *testing.T, payload []byte) {
		before := len(fsmtest.Dump(t, h.DB, ""))
		v, err := h.Propose(context.Background(), wire.CmdIdentitySignIn, payload)
		if err != nil {
			if !errors.Is(err, errBadCommand) {
				t.Fatalf("refusal %v is not errBadCommand", err)
			}
			if after := len(fsmtest.Dump(t, h.DB, "")); after != before {
				t.Fatalf("refused, yet wrote %d keys", after-before)
			}
			return
		}
		r := v.(identitySignInResult)
		if wire.ValidUserID(r.Account.UID) != nil || reservedUsernames[r.Account.UID] {
			t.Fatalf("result %+v", r)
		}
		v, err = h.Propose(context.Background(), wire.CmdIdentitySignIn, payload)
		if err != nil || v.(identitySignInResult).Account.UID != r.Account.UID || v.(identitySignInResult).Created {
			t.Fatalf("again: %+v %v", v, err)
		}
	})
}

// With password login turned off (--password-login=false: users sign
// in through providers only) a password no longer signs anyone in, so
// an account's last provider link is its last way in even when the
// account has a password (made before the switch): unlinking it locked
// the user out for good. It is refused (409 last_sign_in_method) as for
// an account without a password; with two links, one may go.
func TestUnlinkingTheLastProviderWithPasswordLoginOff(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.NoPasswordLogin = true })
	ctx := context.Background()
	if _, err := e.svc.CreateAccount(ctx, "alice", "password1", "Alice"); err != nil {
		t.Fatal(err)
	}
	corp := fid("s-1", "alice")
	if err := e.svc.LinkIdentity(ctx, "alice", corp); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.UnlinkIdentity(ctx, "alice", "corp"); !errors.Is(err, ErrLastSignIn) {
		t.Fatalf("unlinking alice's only provider with password login off: %v, want ErrLastSignIn", err)
	}
	// GET /user/me/identities says whether she can sign in with one.
	if can, err := e.svc.HasPassword("alice"); err != nil || can {
		t.Errorf("alice can sign in with a password: %v %v, want false (password login is off)", can, err)
	}
	if links, _ := e.svc.Identities("alice"); len(links) != 1 {
		t.Fatalf("alice's links: %+v", links)
	}
	other := FederatedIdentity{Provider: "social", Issuer: "https://social.example.com", Subject: "x-7", Username: "alice"}
	if err := e.svc.LinkIdentity(ctx, "alice", other); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.UnlinkIdentity(ctx, "alice", "corp"); err != nil {
		t.Fatalf("unlinking one of two providers: %v", err)
	}
	if err := e.svc.UnlinkIdentity(ctx, "alice", "social"); !errors.Is(err, ErrLastSignIn) {
		t.Fatalf("then the last one: %v, want ErrLastSignIn", err)
	}
}
