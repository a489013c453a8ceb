package auth

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/internal/wire"
)

// hookProposer is a node's proposer that runs after once, right after
// the first command of type on commits and before its value goes back
// to the proposing node: what the cluster commits meanwhile (another
// node's request a moment later).
type hookProposer struct {
	Proposer
	on    byte
	once  sync.Once
	armed bool
	after func()
	// before: run it just before that command is proposed instead
	// (the log orders another node's command first).
	before bool
}

func (h *hookProposer) Propose(ctx context.Context, t byte, payload []byte) (any, error) {
	if h.armed && h.before && t == h.on {
		h.once.Do(h.after)
	}
	v, err := h.Proposer.Propose(ctx, t, payload)
	if h.armed && !h.before && t == h.on && err == nil {
		h.once.Do(h.after)
	}
	return v, err
}

// A refresh through node B commits its rotation just before the user
// signs out everywhere through node A, and B mints the new access token
// a moment after the sign-out: that token belongs to a session the
// sign-out ended, and must be refused like the rest, not live out its
// 15 minutes (it was accepted: its iat is after the sign-out's time).
func TestRefreshRacingSignOutEverywhereMintsNoLiveToken(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	hp := &hookProposer{Proposer: e.prop, on: wire.CmdRefreshIssue, after: func() {
		e.clock.Advance(time.Millisecond)
		if _, err := e.svc.LogoutAll(ctx, "alice"); err != nil {
			t.Errorf("logout-all through node A: %v", err)
		}
		e.clock.Advance(time.Millisecond)
	}}
	f := e.prop.NewFollower(t)
	nodeB, err := New(Config{KeyDir: t.TempDir() + "/keys", Argon2: tinyArgon},
		Deps{DB: f.DB(), Proposer: hp, FSM: f, Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	for _, svc := range []*Service{e.svc, nodeB} { // as nodes do at start
		if err := svc.PublishKey(ctx); err != nil {
			t.Fatal(err)
		}
	}
	e.register("alice", "password1")
	stolen := e.login("alice", "password1")

	hp.armed = true
	got, err := nodeB.Refresh(ctx, stolen.RefreshToken)
	if err != nil {
		t.Fatalf("the refresh committed before the sign-out: %v", err)
	}
	if _, ok := e.svc.signedOut.get("alice"); !ok {
		t.Fatal("the sign-out did not run between the rotation and the mint")
	}
	for name, svc := range map[string]*Service{"node A": e.svc, "node B": nodeB} {
		if _, err := svc.VerifyAccessToken(got.AccessToken); !errors.Is(err, wire.ErrBadToken) {
			t.Errorf("%s: the access token of a session that signing out everywhere ended: %v, want refused", name, err)
		}
	}
	if _, err := nodeB.Refresh(ctx, got.RefreshToken); !errors.Is(err, ErrRefreshInvalid) {
		t.Errorf("its refresh token: %v, want invalid", err)
	}
	// A sign-in after the sign-out works, on both nodes.
	again := e.login("alice", "password1")
	for name, svc := range map[string]*Service{"node A": e.svc, "node B": nodeB} {
		if _, err := svc.VerifyAccessToken(again.AccessToken); err != nil {
			t.Errorf("%s: a sign-in after the sign-out: %v", name, err)
		}
	}
	// So does a node that starts afterwards: it reads the ended sessions back.
	restarted := e.restartedOn(f.DB(), t.TempDir()+"/keys2")
	if _, err := restarted.VerifyAccessToken(got.AccessToken); !errors.Is(err, wire.ErrBadToken) {
		t.Errorf("a node started after the sign-out: %v, want refused", err)
	}
}

// A sign-in through node B that checked the account before B applied
// its suspension (committed through node A a moment before B's sign-in
// entry) made a session all the same: refused while the suspension
// lasted, it came back to life when the suspension was lifted, though
// it began after the suspension that was to end every session (a
// hijacker signing in again as the admin suspends the account). The
// log decides: the sign-in is refused (403 account_suspended).
func TestSignInRacingASuspensionMakesNoSession(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	hp := &hookProposer{Proposer: e.prop, on: wire.CmdRefreshIssue, before: true, after: func() {
		if err := e.svc.SetSuspended(ctx, "mallory", true); err != nil {
			t.Errorf("suspend through node A: %v", err)
		}
	}}
	f := e.prop.NewFollower(t)
	nodeB, err := New(Config{KeyDir: t.TempDir() + "/keys", Argon2: tinyArgon},
		Deps{DB: f.DB(), Proposer: hp, FSM: f, Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	e.register("mallory", "password1")

	hp.armed = true
	tk, err := nodeB.Login(ctx, "mallory", "password1", "192.0.2.9")
	if !errors.Is(err, ErrSuspended) {
		t.Errorf("a sign-in the log orders after the suspension: %v, want ErrSuspended", err)
	}
	if err := e.svc.SetSuspended(ctx, "mallory", false); err != nil {
		t.Fatal(err)
	}
	if err == nil {
		if _, err := nodeB.Refresh(ctx, tk.RefreshToken); !errors.Is(err, ErrRefreshInvalid) {
			t.Errorf("its refresh token once the suspension is lifted: %v, want invalid", err)
		}
	}
	for name, svc := range map[string]*Service{"node A": e.svc, "node B": nodeB} {
		if ss, err := svc.Sessions("mallory", ""); err != nil || len(ss) != 0 {
			t.Errorf("%s: mallory's sessions once the suspension is lifted: %+v %v, want none", name, ss, err)
		}
	}
	// Lifted: signing in works again.
	if _, err := nodeB.Login(ctx, "mallory", "password1", "192.0.2.9"); err != nil {
		t.Errorf("a sign-in after the suspension was lifted: %v", err)
	}
}

// A sign-in with the old password whose check was under way (the
// password hash takes tens of milliseconds; or its node had not applied
// the change yet) when the user changed their password through another
// node made a session all the same, after the change that was to end
// every session of whoever knew the old password: a thief kept the
// account. The log decides: the sign-in is refused (401
// invalid_credentials); the session of the change goes on.
func TestSignInWithTheOldPasswordRacingAChangeMakesNoSession(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	var changed PasswordChange
	hp := &hookProposer{Proposer: e.prop, on: wire.CmdRefreshIssue, before: true, after: func() {
		var err error
		changed, err = e.svc.ChangePassword(ctx, "alice", PasswordProof{Password: "old-password"}, "new-password", "192.0.2.7")
		if err != nil {
			t.Errorf("the password change through node A: %v", err)
		}
	}}
	f := e.prop.NewFollower(t)
	nodeB, err := New(Config{KeyDir: t.TempDir() + "/keys", Argon2: tinyArgon},
		Deps{DB: f.DB(), Proposer: hp, FSM: f, Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	e.register("alice", "old-password")

	hp.armed = true
	tk, err := nodeB.Login(ctx, "thief", "x", "192.0.2.9") // arms nothing: no family proposed
	if err == nil {
		t.Fatalf("a login of nobody: %+v", tk)
	}
	tk, err = nodeB.Login(ctx, "alice", "old-password", "192.0.2.9")
	if !errors.Is(err, ErrInvalidCredentials) {
		t.Errorf("a sign-in with the old password the log orders after the change: %+v %v, want ErrInvalidCredentials", tk, err)
	}
	for name, svc := range map[string]*Service{"node A": e.svc, "node B": nodeB} {
		ss, err := svc.Sessions("alice", "")
		if err != nil || len(ss) != 1 {
			t.Errorf("%s: alice's sessions after the change: %+v %v, want only the change's", name, ss, err)
		}
	}
	if _, err := e.svc.Refresh(ctx, changed.RefreshToken); err != nil {
		t.Errorf("the session of the change: %v", err)
	}
	if _, err := nodeB.Login(ctx, "alice", "new-password", "192.0.2.9"); err != nil {
		t.Errorf("a sign-in with the new password: %v", err)
	}
}

// A spent refresh token presented again means that two parties hold the
// session (a stolen copy): the family is revoked, and so is the session
// itself, as DELETE /auth/sessions/{id} ends one. The access token the
// other party got from its refresh was accepted until it expired, and
// its MQTT connections stayed open for as long as their sockets lived.
func TestRefreshReuseEndsTheSession(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	var ended []string
	e.svc.OnSessionEnded(func(sid string) { ended = append(ended, sid) })
	e.register("alice", "password1")
	stolen := e.login("alice", "password1")
	other := e.login("alice", "password1") // another session, untouched
	thief, err := e.svc.Refresh(ctx, stolen.RefreshToken)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Refresh(ctx, stolen.RefreshToken); !errors.Is(err, ErrRefreshReused) {
		t.Fatalf("the owner's spent token: %v, want ErrRefreshReused", err)
	}
	for name, tok := range map[string]string{"the thief's": thief.AccessToken, "the owner's": stolen.AccessToken} {
		if _, err := e.svc.VerifyAccessToken(tok); !errors.Is(err, wire.ErrBadToken) {
			t.Errorf("%s access token of the session whose token was reused: %v, want refused", name, err)
		}
	}
	if len(ended) != 1 {
		t.Errorf("sessions told to close: %q, want the reused one", ended)
	}
	if _, err := e.svc.VerifyAccessToken(other.AccessToken); err != nil {
		t.Errorf("alice's other session: %v", err)
	}
}

// Sign out everywhere refused the access tokens issued before it by
// their issue time, as the minting node's clock wrote it: a token that
// a node whose clock runs ahead of the signing-out node's (by 2 s here)
// minted before the sign-out carried a later time and was accepted for
// its whole lifetime. The sessions the sign-out ends refuse it.
func TestSignOutEverywhereRefusesTokensOfANodeWhoseClockIsAhead(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	ahead := testutil.NewFakeClock(e.clock.Now().Add(2 * time.Second))
	f := e.prop.NewFollower(t)
	nodeB, err := New(Config{KeyDir: t.TempDir() + "/keys", Argon2: tinyArgon},
		Deps{DB: f.DB(), Proposer: e.prop, FSM: f, Now: ahead.Now})
	if err != nil {
		t.Fatal(err)
	}
	for _, svc := range []*Service{e.svc, nodeB} {
		if err := svc.PublishKey(ctx); err != nil {
			t.Fatal(err)
		}
	}
	e.register("alice", "password1")
	tk, err := nodeB.Login(ctx, "alice", "password1", "192.0.2.9")
	if err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(time.Second) // the sign-out comes after the sign-in
	ahead.Advance(time.Second)
	if _, err := e.svc.LogoutAll(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	for name, svc := range map[string]*Service{"node A": e.svc, "node B": nodeB} {
		if _, err := svc.VerifyAccessToken(tk.AccessToken); !errors.Is(err, wire.ErrBadToken) {
			t.Errorf("%s: a token issued before the sign-out by a node whose clock is ahead: %v, want refused", name, err)
		}
	}
}

// A provider's sign-in that found its account live, and whose session
// entry the log ordered after the account's deletion (through another
// node a moment before), failed with an internal error (500), though a
// sign-in of a deleted account's provider subject makes a new account.
func TestFederatedSignInRacingTheAccountsDeletion(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	first, err := e.svc.SignInFederated(ctx, fid("s-1", "dora"))
	if err != nil {
		t.Fatal(err)
	}
	hp := &hookProposer{Proposer: e.prop, on: wire.CmdRefreshIssue, before: true, after: func() {
		if _, err := e.svc.DeleteAccountByAdmin(ctx, first.UserID); err != nil {
			t.Errorf("delete through node A: %v", err)
		}
	}}
	f := e.prop.NewFollower(t)
	nodeB, err := New(Config{KeyDir: t.TempDir() + "/keys", Argon2: tinyArgon},
		Deps{DB: f.DB(), Proposer: hp, FSM: f, Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	// The follower missed what came before it: give it dora's account
	// and link as the leader has them.
	for _, key := range []string{prefixAccount + first.UserID, prefixIdent + identKey(fid("s-1", "dora").Issuer, "s-1")} {
		setRaw(t, f.DB(), key, rawKey(t, e.db, key))
	}
	if err := nodeB.PublishKey(ctx); err != nil {
		t.Fatal(err)
	}
	hp.armed = true
	tk, err := nodeB.SignInFederated(ctx, fid("s-1", "dora"))
	if err != nil {
		t.Fatalf("a sign-in of the subject of an account deleted a moment before: %v", err)
	}
	if tk.UserID == first.UserID {
		t.Fatalf("signed in to the deleted account %s", tk.UserID)
	}
	if _, err := e.svc.VerifyAccessToken(tk.AccessToken); err != nil {
		t.Errorf("the new account's token: %v", err)
	}
}
