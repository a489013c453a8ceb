package auth

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/internal/wire"
)

func newLaggingEnv(t *testing.T) (*env, *testutil.LaggingNode) {
	lag := &testutil.LaggingNode{}
	return newEnvWithBarrier(t, Config{KeyDir: t.TempDir() + "/keys", Argon2: tinyArgon}, lag.Barrier), lag
}

// rawKey reads key as it is stored (nil: absent).
func rawKey(t *testing.T, db *badger.DB, key string) []byte {
	t.Helper()
	var v []byte
	err := db.View(func(tx *badger.Txn) error {
		it, err := tx.Get([]byte(key))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		v, err = it.ValueCopy(nil)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// setRaw writes key as v, or deletes it when v is nil.
func setRaw(t *testing.T, db *badger.DB, key string, v []byte) {
	t.Helper()
	err := db.Update(func(tx *badger.Txn) error {
		if v == nil {
			return tx.Delete([]byte(key))
		}
		return tx.Set([]byte(key), v)
	})
	if err != nil {
		t.Error(err)
	}
}

// An account created through another node a moment ago signs in on a
// node that has not applied it yet: the refusal waits for the barrier
// and looks again.
func TestLoginOfAnAccountThisNodeHasNotAppliedYet(t *testing.T) {
	e, lag := newLaggingEnv(t)
	lag.Hold(func() {
		if _, err := e.svc.CreateAccount(context.Background(), "carol", "password1", "Carol"); err != nil {
			t.Error(err)
		}
	})
	tk := e.login("carol", "password1")
	if tk.UserID != "carol" {
		t.Fatalf("tokens: %+v", tk)
	}
	if got := testutil.CounterValue(t, e.svc.logins.WithLabelValues("invalid_credentials")); got != 0 {
		t.Fatalf("a refusal counted: %v", got)
	}

	// A sign-in that succeeds locally costs no barrier; each refusal, of
	// a known name or an unknown one, costs one (the wait is the same).
	before := lag.Barriers()
	e.login("carol", "password1")
	for _, body := range []map[string]string{
		{"username": "carol", "password": "password2"},
		{"username": "nobody", "password": "password1"},
	} {
		if r := e.post("/auth/login", body); r.Code != http.StatusUnauthorized {
			t.Fatalf("%v: %d %s", body, r.Code, r.Body)
		}
	}
	if got := lag.Barriers() - before; got != 2 {
		t.Fatalf("barriers = %d, want 2", got)
	}
}

// An account whose hash this node holds differently from the cluster
// (no endpoint changes a password today; the check must not rely on
// that): the committed one decides.
func TestLoginWithAPasswordThisNodeHasNotAppliedYet(t *testing.T) {
	e, lag := newLaggingEnv(t)
	e.register("dave", "old-password")
	key := prefixAccount + "dave"
	stale := rawKey(t, e.db, key)
	// The cluster's state: the account with another password.
	setRaw(t, e.db, key, nil)
	if _, err := e.svc.CreateAccount(context.Background(), "dave", "new-password", "Dave"); err != nil {
		t.Fatal(err)
	}
	fresh := rawKey(t, e.db, key)
	setRaw(t, e.db, key, stale)
	lag.Hold(func() { setRaw(t, e.db, key, fresh) })
	if tk := e.login("dave", "new-password"); tk.UserID != "dave" {
		t.Fatalf("tokens: %+v", tk)
	}
	if r := e.post("/auth/login", map[string]string{"username": "dave", "password": "old-password"}); r.Code != http.StatusUnauthorized {
		t.Fatalf("old password: %d %s", r.Code, r.Body)
	}
}

// A refresh token issued (login) or rotated through another node a
// moment ago refreshes and logs out on a node that lags.
func TestRefreshAndLogoutOfATokenThisNodeHasNotAppliedYet(t *testing.T) {
	e, lag := newLaggingEnv(t)
	e.register("erin", "password1")
	tk := e.login("erin", "password1")
	family, _, _ := strings.Cut(tk.RefreshToken, ".")
	key := prefixRefresh + family
	issued := rawKey(t, e.db, key)
	setRaw(t, e.db, key, nil)
	lag.Hold(func() { setRaw(t, e.db, key, issued) })
	r := e.post("/auth/refresh", map[string]string{"refreshToken": tk.RefreshToken})
	if r.Code != http.StatusOK {
		t.Fatalf("refresh of a family not applied here yet: %d %s", r.Code, r.Body)
	}
	rotated := rawKey(t, e.db, key)
	var tk2 Tokens
	if err := json.Unmarshal(r.Body, &tk2); err != nil {
		t.Fatal(err)
	}

	// This node still holds the family before the rotation.
	setRaw(t, e.db, key, issued)
	lag.Hold(func() { setRaw(t, e.db, key, rotated) })
	if err := e.svc.Logout(context.Background(), tk2.RefreshToken); err != nil {
		t.Fatalf("logout with the rotated token: %v", err)
	}
	if r := e.post("/auth/refresh", map[string]string{"refreshToken": tk2.RefreshToken}); r.Code != http.StatusUnauthorized {
		t.Fatalf("refresh after logout: %d %s", r.Code, r.Body)
	}
}

// When the node cannot reach its leader it cannot tell a wrong password
// from one it has not heard of: 503, not 401.
func TestLoginRefusalWhileTheNodeCannotCatchUp(t *testing.T) {
	e, lag := newLaggingEnv(t)
	e.register("frank", "password1")
	lag.SetDown(wire.ErrUnavailable)
	r := e.post("/auth/login", map[string]string{"username": "frank", "password": "password2"})
	if r.Code != http.StatusServiceUnavailable || r.errCode() != "unavailable" {
		t.Fatalf("login: %d %s", r.Code, r.Body)
	}
	if got := testutil.CounterValue(t, e.svc.logins.WithLabelValues("error")); got != 1 {
		t.Fatalf("error metric = %v", got)
	}
	// The right password needs no barrier.
	e.login("frank", "password1")
}

// A user who changed their password through another node a moment ago
// deletes their account on a node that has not applied the change yet:
// the new password, checked against the account as committed (as login
// and a password change check it), is right; it was refused 403
// forbidden and counted as a wrong password against the login limits.
func TestDeleteWithAPasswordThisNodeHasNotAppliedYet(t *testing.T) {
	e, lag := newLaggingEnv(t)
	e.register("dave", "old-password")
	key := prefixAccount + "dave"
	stale := rawKey(t, e.db, key)
	if _, err := e.svc.ChangePassword(context.Background(), "dave", PasswordProof{Password: "old-password"}, "new-password", "192.0.2.7"); err != nil {
		t.Fatal(err)
	}
	fresh := rawKey(t, e.db, key)
	setRaw(t, e.db, key, stale)
	lag.Hold(func() { setRaw(t, e.db, key, fresh) })
	if r := e.as("dave", http.MethodDelete, "/user/me", `{"password":"new-password"}`); r.Code != http.StatusAccepted {
		t.Fatalf("the new password, changed through another node a moment ago: %d %s", r.Code, r.Body)
	}
	if !e.svc.Deleted("dave") {
		t.Fatal("dave is not deleted")
	}
}

// The same with a provider a user linked through another node a moment
// ago: its token proves them on a node that has not applied the link
// yet, to delete the account as to change the password.
func TestProofByAProviderLinkThisNodeHasNotAppliedYet(t *testing.T) {
	e, lag := newLaggingEnv(t)
	ctx := context.Background()
	e.svc.SetProviderCheck(func(_ context.Context, provider, token string) (FederatedIdentity, error) {
		if provider == "corp" && token == "gina-token" {
			return fid("s-9", "gina"), nil
		}
		return FederatedIdentity{}, errors.New("bad token")
	})
	e.register("gina", "password1")
	key := prefixIdent + identKey(fid("s-9", "gina").Issuer, "s-9")
	if err := e.svc.LinkIdentity(ctx, "gina", fid("s-9", "gina")); err != nil {
		t.Fatal(err)
	}
	link := rawKey(t, e.db, key)
	setRaw(t, e.db, key, nil)
	lag.Hold(func() { setRaw(t, e.db, key, link) })
	r := e.as("gina", http.MethodPost, "/auth/password", `{"provider":"corp","subjectToken":"gina-token","newPassword":"password2"}`)
	if r.Code != http.StatusOK {
		t.Fatalf("a password change proved by a provider linked a moment ago: %d %s", r.Code, r.Body)
	}
	setRaw(t, e.db, key, nil)
	lag.Hold(func() { setRaw(t, e.db, key, link) })
	if r := e.as("gina", http.MethodDelete, "/user/me", `{"provider":"corp","subjectToken":"gina-token"}`); r.Code != http.StatusAccepted {
		t.Fatalf("a deletion proved by a provider linked a moment ago: %d %s", r.Code, r.Body)
	}
}
