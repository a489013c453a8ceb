package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/wire"
)

// moreFamilies gives uid n families that sort before any a sign-in makes
// (so that a sign-out's first step revokes these first).
func moreFamilies(t *testing.T, e *env, uid string, n int) {
	t.Helper()
	for i := range n {
		b, _ := json.Marshal(refreshIssueCmd{Family: fmt.Sprintf("-----%04d", i), UID: uid, Hash: "h",
			ExpiresAt: e.clock.Now().Add(e.svc.cfg.RefreshTTL), At: e.clock.Now()})
		if _, err := e.prop.Propose(context.Background(), wire.CmdRefreshIssue, b); err != nil {
			t.Fatal(err)
		}
	}
}

// A sign-out everywhere cut short after its first step (its node died
// between steps) leaves families live; their refresh must not mint
// access tokens, which the sign-out would not refuse (issued after it).
// A sign-in after the sign-out refreshes as usual.
func TestRefreshOfAFamilyASignOutLeftLiveIsRefused(t *testing.T) {
	e := newEnv(t)
	e.register("alice", "password1")
	e.register("bob", "password2")
	ctx := context.Background()
	moreFamilies(t, e, "alice", revokeAllStepWrites)
	left := e.login("alice", "password1")
	bobs := e.login("bob", "password2")
	e.clock.Advance(time.Second)

	// One step only, as the node that began the sign-out proposed it.
	b, _ := json.Marshal(refreshRevokeAllCmd{UID: "alice", Reason: "logout-all", At: e.clock.Now().UTC()})
	v, err := e.prop.Propose(ctx, wire.CmdRefreshRevokeAll, b)
	if err != nil {
		t.Fatal(err)
	}
	if v.(*revokeAllCommitted).step.Done {
		t.Fatal("the first step revoked everything: the test proves nothing")
	}
	if live, _ := countFamilies(t, e.db, "alice"); live != 1 {
		t.Fatalf("alice has %d live families after the first step, want 1", live)
	}
	e.clock.Advance(time.Second)
	if got, err := e.svc.Refresh(ctx, left.RefreshToken); !errors.Is(err, ErrRefreshInvalid) {
		t.Fatalf("refresh of a session older than the sign-out: %+v, %v", got, err)
	}
	if _, err := e.svc.Refresh(ctx, bobs.RefreshToken); err != nil {
		t.Fatalf("bob's session: %v", err)
	}
	again := e.login("alice", "password1")
	e.clock.Advance(time.Second)
	if _, err := e.svc.Refresh(ctx, again.RefreshToken); err != nil {
		t.Fatalf("a sign-in after the sign-out: %v", err)
	}
}

// A sign-out everywhere whose client goes away after the first step (its
// request's context ends) still revokes every family.
func TestLogoutAllFinishesWhenTheClientGoesAway(t *testing.T) {
	e := newEnv(t)
	e.register("alice", "password1")
	moreFamilies(t, e, "alice", revokeAllStepWrites+5)
	e.login("alice", "password1")
	e.clock.Advance(time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e.prop.BeforeNext(func() {
		// The first step is being proposed: the client goes away now,
		// so every later step sees its context done.
		cancel()
	})
	n, err := e.svc.LogoutAll(ctx, "alice")
	if err != nil {
		t.Fatalf("logout-all: %d, %v", n, err)
	}
	if live, revoked := countFamilies(t, e.db, "alice"); live != 0 || revoked != revokeAllStepWrites+6 {
		t.Fatalf("alice has %d live and %d revoked families, want 0 and %d", live, revoked, revokeAllStepWrites+6)
	}
}
