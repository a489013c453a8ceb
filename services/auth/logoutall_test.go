package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/internal/httpapi"
	"github.com/edgechat/edgechat/internal/wire"
)

// Sign out everywhere: POST /auth/logout-all revokes every refresh-token
// family of the caller (rotated ones, and more than one step's worth),
// clears the session cookie, and leaves other users' sessions alone; a
// follower applying the same log agrees; signing in again works.
func TestLogoutAllRevokesEveryFamily(t *testing.T) {
	e := newEnv(t)
	follower, onFollower := e.follower()
	var kicked []string
	e.svc.OnSignedOutEverywhere(func(uid string) { kicked = append(kicked, uid) })
	e.register("alice", "password1")
	e.register("bob", "password2")
	first, second := e.login("alice", "password1"), e.login("alice", "password1")
	bobs := e.login("bob", "password2")
	ctx := context.Background()
	rotated, err := e.svc.Refresh(ctx, first.RefreshToken)
	if err != nil {
		t.Fatal(err)
	}
	// More families than one step revokes: the service takes more steps.
	extra := revokeAllStepWrites + 20
	for i := range extra {
		b, _ := json.Marshal(refreshIssueCmd{Family: fmt.Sprintf("extra-%04d", i), UID: "alice", Hash: "h",
			ExpiresAt: e.clock.Now().Add(e.svc.cfg.RefreshTTL), At: e.clock.Now()})
		if _, err := e.prop.Propose(ctx, wire.CmdRefreshIssue, b); err != nil {
			t.Fatal(err)
		}
	}

	e.clock.Advance(time.Second) // the sign-out comes after those sign-ins
	if r := e.post("/auth/logout-all", map[string]string{}); r.Code != http.StatusUnauthorized {
		t.Fatalf("logout-all without a principal: %d %s", r.Code, r.Body)
	}
	req := httpRequest(http.MethodPost, "/auth/logout-all", `{}`, "application/json")
	req.AddCookie(&http.Cookie{Name: SessionCookie, Value: second.RefreshToken})
	req = req.WithContext(httpapi.WithPrincipal(req.Context(), httpapi.Principal{UserID: "alice"}))
	rec := serve(e, req)
	if rec.Code != http.StatusOK {
		t.Fatalf("logout-all: %d %s", rec.Code, rec.Body)
	}
	var got struct{ Revoked int }
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil || got.Revoked != extra+2 {
		t.Fatalf("logout-all answered %s (%v), want %d revoked", rec.Body, err, extra+2)
	}
	cleared := false
	for _, c := range rec.Result().Cookies() {
		cleared = cleared || c.Name == SessionCookie && c.MaxAge < 0
	}
	if !cleared {
		t.Fatalf("the session cookie was not cleared: %q", rec.Header().Values("Set-Cookie"))
	}
	for name, tok := range map[string]string{"rotated": rotated.RefreshToken, "second": second.RefreshToken} {
		if _, err := e.svc.Refresh(ctx, tok); !errors.Is(err, ErrRefreshInvalid) {
			t.Fatalf("refresh of alice's %s session after logout-all: %v", name, err)
		}
	}
	if _, err := e.svc.Refresh(ctx, bobs.RefreshToken); err != nil {
		t.Fatalf("bob's session was touched: %v", err)
	}
	// The follower's copy says the same of every family.
	for name, db := range map[string]*badger.DB{"leader": e.db, "follower": follower.DB()} {
		if live, revoked := countFamilies(t, db, "alice"); live != 0 || revoked != extra+2 {
			t.Fatalf("%s: alice has %d live and %d revoked families, want 0 and %d", name, live, revoked, extra+2)
		}
	}
	// The access tokens issued before are refused at once (the follower,
	// which knows no signing key here, has the same sign-out time); bob's
	// are not; the user's sessions were told to close.
	for _, tok := range []string{first.AccessToken, second.AccessToken, rotated.AccessToken} {
		if _, err := e.svc.VerifyAccessToken(tok); !errors.Is(err, wire.ErrBadToken) {
			t.Fatalf("alice's access token issued before the sign-out: %v", err)
		}
	}
	if _, err := e.svc.VerifyAccessToken(bobs.AccessToken); err != nil {
		t.Fatalf("bob's access token: %v", err)
	}
	la, _ := e.svc.signedOut.get("alice")
	if fa, ok := onFollower.signedOut.get("alice"); !ok || !fa.Equal(la) {
		t.Fatalf("the follower's sign-out of alice: %v %v, the leader's %v", fa, ok, la)
	}
	if len(kicked) == 0 || kicked[0] != "alice" {
		t.Fatalf("sessions closed for %v", kicked)
	}
	// Again: nothing left to revoke. And a new sign-in works.
	if n, err := e.svc.LogoutAll(ctx, "alice"); err != nil || n != 0 {
		t.Fatalf("a second logout-all: %d %v", n, err)
	}
	again := e.login("alice", "password1")
	if _, err := e.svc.Refresh(ctx, again.RefreshToken); err != nil {
		t.Fatalf("a new session after logout-all: %v", err)
	}
	// In the same millisecond as the sign-out, too (iatms, not iat).
	if _, err := e.svc.VerifyAccessToken(again.AccessToken); err != nil {
		t.Fatalf("the access token of a sign-in after the sign-out: %v", err)
	}
	// A node that starts (or restores a snapshot) reads the sign-outs back.
	loaded := newSignedOutSet()
	if err := loaded.load(follower.DB()); err != nil {
		t.Fatal(err)
	}
	if at, ok := loaded.get("alice"); !ok || !at.Equal(e.clock.Now().UTC()) {
		t.Fatalf("alice's sign-out read back: %v %v, want %v", at, ok, e.clock.Now())
	}
	if _, ok := loaded.get("bob"); ok {
		t.Fatal("bob signed out too")
	}
}

// countFamilies counts uid's refresh-token families in db.
func countFamilies(t *testing.T, db *badger.DB, uid string) (live, revoked int) {
	t.Helper()
	err := db.View(func(tx *badger.Txn) error {
		it := tx.NewIterator(badger.IteratorOptions{Prefix: []byte(prefixRefresh), PrefetchValues: true})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			var f refreshFamily
			if err := it.Item().Value(func(v []byte) error { return json.Unmarshal(v, &f) }); err != nil {
				return err
			}
			switch {
			case f.UID != uid:
			case f.Revoked:
				revoked++
			default:
				live++
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return live, revoked
}
