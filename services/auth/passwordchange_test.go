package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/httpapi"
	"github.com/edgechat/edgechat/internal/ratelimit"
	"github.com/edgechat/edgechat/internal/wire"
)

// as sends a JSON request as the signed-in user uid.
func (e *env) as(uid, method, path, body string) resp {
	e.t.Helper()
	req := httpRequest(method, path, body, "application/json")
	req.RemoteAddr = "192.0.2.7:40000"
	if uid != "" {
		req = req.WithContext(httpapi.WithPrincipal(req.Context(), httpapi.Principal{UserID: uid}))
	}
	rec := serve(e, req)
	return resp{Code: rec.Code, Header: rec.Header(), Body: rec.Body.Bytes()}
}

// A password change ends every other session of the user in the same
// commit as the new hash, on every node: refresh tokens and access
// tokens issued before are refused, live sessions are told to close,
// the old password stops working and the new one works; the caller
// gets tokens that work. Wrong or malformed requests change nothing.
func TestChangePasswordSignsOutEverywhereElse(t *testing.T) {
	e := newEnv(t)
	_, onFollower := e.follower()
	var kicked []string
	e.svc.OnSignedOutEverywhere(func(uid string) { kicked = append(kicked, uid) })
	e.register("alice", "password1")
	e.register("bob", "password2")
	phone, laptop := e.login("alice", "password1"), e.login("alice", "password1")
	bobs := e.login("bob", "password2")
	ctx := context.Background()
	e.clock.Advance(time.Second)

	refused := []struct {
		name, uid, body string
		status          int
		code            string
	}{
		{"no principal", "", `{"currentPassword":"password1","newPassword":"password9"}`, 401, httpapi.CodeUnauthorized},
		{"wrong current password", "alice", `{"currentPassword":"password2","newPassword":"password9"}`, 403, httpapi.CodeForbidden},
		{"no proof", "alice", `{"newPassword":"password9"}`, 403, httpapi.CodeForbidden},
		{"a provider token and no provider check", "alice", `{"provider":"corp","subjectToken":"x","newPassword":"password9"}`, 403, httpapi.CodeForbidden},
		{"new password too short", "alice", `{"currentPassword":"password1","newPassword":"short"}`, 400, CodeInvalidPassword},
		{"new password too long", "alice", `{"currentPassword":"password1","newPassword":"` + strings.Repeat("p", MaxPassword+1) + `"}`, 400, CodeInvalidPassword},
		{"both proofs", "alice", `{"currentPassword":"password1","provider":"corp","subjectToken":"x","newPassword":"password9"}`, 400, httpapi.CodeValidation},
		{"bad session mode", "alice", `{"currentPassword":"password1","newPassword":"password9","session":"jar"}`, 400, httpapi.CodeValidation},
		{"unknown field", "alice", `{"currentPassword":"password1","newPassword":"password9","admin":true}`, 400, httpapi.CodeUnknownField},
		{"malformed JSON", "alice", `{"currentPassword":`, 400, httpapi.CodeInvalidJSON},
	}
	for _, c := range refused {
		if r := e.as(c.uid, http.MethodPost, "/auth/password", c.body); r.Code != c.status || r.errCode() != c.code {
			t.Fatalf("%s: %d %s, want %d %s", c.name, r.Code, r.Body, c.status, c.code)
		}
	}
	if live, revoked := countFamilies(t, e.db, "alice"); live != 2 || revoked != 0 {
		t.Fatalf("the refused changes touched alice's sessions: %d live, %d revoked", live, revoked)
	}
	if _, err := e.svc.Refresh(ctx, phone.RefreshToken); err != nil {
		t.Fatalf("the phone's session after refused changes: %v", err)
	}
	phone = e.login("alice", "password1") // the old password still works
	// The change comes after that sign-in, in the middle of a
	// millisecond: the caller's new access token, minted at once, must
	// not be refused by the sign-out it comes with (tokens carry
	// milliseconds).
	e.clock.Advance(time.Second + 500*time.Microsecond)

	r := e.as("alice", http.MethodPost, "/auth/password", `{"currentPassword":"password1","newPassword":"password9"}`)
	if r.Code != http.StatusOK {
		t.Fatalf("change: %d %s", r.Code, r.Body)
	}
	var got PasswordChange
	if err := json.Unmarshal(r.Body, &got); err != nil {
		t.Fatal(err)
	}
	// The phone's first family (rotated above), its second and the laptop's.
	if got.Revoked != 3 || got.UserID != "alice" || got.AccessToken == "" || got.RefreshToken == "" {
		t.Fatalf("change answered %s, want 3 sessions revoked and new tokens", r.Body)
	}
	if r.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("Cache-Control %q", r.Header.Get("Cache-Control"))
	}
	for name, tok := range map[string]string{"phone": phone.RefreshToken, "laptop": laptop.RefreshToken} {
		if _, err := e.svc.Refresh(ctx, tok); !errors.Is(err, ErrRefreshInvalid) {
			t.Fatalf("the %s's refresh token after the change: %v", name, err)
		}
	}
	for name, tok := range map[string]string{"phone": phone.AccessToken, "laptop": laptop.AccessToken} {
		if _, err := e.svc.VerifyAccessToken(tok); !errors.Is(err, wire.ErrBadToken) {
			t.Fatalf("the %s's access token after the change: %v", name, err)
		}
	}
	if len(kicked) == 0 || kicked[0] != "alice" {
		t.Fatalf("sessions closed for %v, want alice's", kicked)
	}
	// The caller's session goes on.
	if _, err := e.svc.VerifyAccessToken(got.AccessToken); err != nil {
		t.Fatalf("the new access token: %v", err)
	}
	if _, err := e.svc.Refresh(ctx, got.RefreshToken); err != nil {
		t.Fatalf("the new refresh token: %v", err)
	}
	// Bob is untouched.
	if _, err := e.svc.VerifyAccessToken(bobs.AccessToken); err != nil {
		t.Fatalf("bob's access token: %v", err)
	}
	if _, err := e.svc.Refresh(ctx, bobs.RefreshToken); err != nil {
		t.Fatalf("bob's session: %v", err)
	}
	// The old password is refused, the new one works.
	if r := e.post("/auth/login", map[string]string{"username": "alice", "password": "password1"}); r.Code != http.StatusUnauthorized {
		t.Fatalf("login with the old password: %d %s", r.Code, r.Body)
	}
	e.login("alice", "password9")
	// The follower applied the same: the same hash, the same sign-out.
	leaderAcct, _, _ := e.svc.readAccount("alice")
	followerAcct, found, err := onFollower.readAccount("alice")
	if err != nil || !found || followerAcct.Hash != leaderAcct.Hash {
		t.Fatalf("the follower's account: %+v %v %v, the leader's hash %q", followerAcct, found, err, leaderAcct.Hash)
	}
	la, _ := e.svc.signedOut.get("alice")
	if fa, ok := onFollower.signedOut.get("alice"); !ok || !fa.Equal(la) {
		t.Fatalf("the follower's sign-out of alice: %v %v, the leader's %v", fa, ok, la)
	}
	if ok, err := onFollower.hasher.verify("password9", followerAcct.Hash); err != nil || !ok {
		t.Fatalf("the new password against the follower's hash: %v %v", ok, err)
	}
}

// A browser asks for the refresh token as the session cookie, as it
// does at login.
func TestChangePasswordInCookieMode(t *testing.T) {
	e := newEnv(t)
	e.register("alice", "password1")
	r := e.as("alice", http.MethodPost, "/auth/password", `{"currentPassword":"password1","newPassword":"password9","session":"cookie"}`)
	if r.Code != http.StatusOK {
		t.Fatalf("change: %d %s", r.Code, r.Body)
	}
	var got PasswordChange
	if err := json.Unmarshal(r.Body, &got); err != nil || got.RefreshToken != "" || got.AccessToken == "" {
		t.Fatalf("answer %s (%v): want an access token and no refresh token in the body", r.Body, err)
	}
	cookie := ""
	for _, c := range (&http.Response{Header: r.Header}).Cookies() {
		if c.Name == SessionCookie {
			cookie = c.Value
		}
	}
	if _, err := e.svc.Refresh(context.Background(), cookie); err != nil {
		t.Fatalf("the cookie's refresh token: %q %v", cookie, err)
	}
}

// The new hash is a compare-and-swap on the one checked: a change whose
// check read a password that has changed since commits nothing, on any
// node, and signs nobody out.
func TestChangePasswordIsACompareAndSwap(t *testing.T) {
	e := newEnv(t)
	e.register("alice", "password1")
	tk := e.login("alice", "password1")
	ctx := context.Background()
	before, _, _ := e.svc.readAccount("alice")
	stale, fresh := "stale", e.svc.hasher.hash("password9")
	_, _, err := e.svc.setPassword(ctx, "alice", fresh, &stale)
	if !errors.Is(err, ErrPasswordChanged) {
		t.Fatalf("a change against a stale hash: %v", err)
	}
	after, _, _ := e.svc.readAccount("alice")
	if after.Hash != before.Hash {
		t.Fatal("the refused change wrote the hash")
	}
	if _, ok := e.svc.signedOut.get("alice"); ok {
		t.Fatal("the refused change signed alice out")
	}
	if _, err := e.svc.Refresh(ctx, tk.RefreshToken); err != nil {
		t.Fatalf("alice's session after the refused change: %v", err)
	}
	if _, _, err := e.svc.setPassword(ctx, "alice", fresh, &before.Hash); err != nil {
		t.Fatalf("a change against the current hash: %v", err)
	}
	// A command with a previous hash and no new one is malformed.
	b, _ := json.Marshal(accountUpdateCmd{UID: "alice", PrevHash: &before.Hash, At: e.clock.Now()})
	if _, err := e.prop.Propose(ctx, wire.CmdAccountUpdate, b); err == nil || !strings.Contains(err.Error(), "prevHash without hash") {
		t.Fatalf("prevHash without a hash: %v", err)
	}
	// Over HTTP the conflict is 409 password_changed.
	if he, ok := passwordHTTPError(ErrPasswordChanged).(*httpapi.Error); !ok || he.Status != http.StatusConflict || he.Code != CodePasswordChanged {
		t.Fatalf("ErrPasswordChanged over HTTP: %#v", passwordHTTPError(ErrPasswordChanged))
	}
}

// A user with more sessions than one sign-out step revokes loses them
// all.
func TestChangePasswordRevokesMoreThanOneStep(t *testing.T) {
	e := newEnv(t)
	e.register("alice", "password1")
	ctx := context.Background()
	extra := revokeAllStepWrites + 7
	for i := range extra {
		b, _ := json.Marshal(refreshIssueCmd{Family: fmt.Sprintf("extra-%04d", i), UID: "alice", Hash: "h",
			ExpiresAt: e.clock.Now().Add(e.svc.cfg.RefreshTTL), At: e.clock.Now()})
		if _, err := e.prop.Propose(ctx, wire.CmdRefreshIssue, b); err != nil {
			t.Fatal(err)
		}
	}
	res, err := e.svc.ChangePassword(ctx, "alice", PasswordProof{Password: "password1"}, "password9", "192.0.2.7")
	if err != nil || res.Revoked != extra {
		t.Fatalf("change: %+v %v, want %d revoked", res, err, extra)
	}
	if live, revoked := countFamilies(t, e.db, "alice"); live != 1 || revoked != extra {
		t.Fatalf("alice has %d live and %d revoked families, want 1 (the caller's new one) and %d", live, revoked, extra)
	}
}

// An account a provider created has no password: its user proves
// themselves with a token of a provider linked to it, and may then sign
// in with the password too. A token of someone else is refused.
func TestChangePasswordByProvider(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	tk, err := e.svc.SignInFederated(ctx, fid("s-1", "dora"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.SignInFederated(ctx, fid("s-2", "erin")); err != nil {
		t.Fatal(err)
	}
	e.svc.SetProviderCheck(func(_ context.Context, provider, token string) (FederatedIdentity, error) {
		if provider != "corp" {
			return FederatedIdentity{}, errors.New("unknown provider")
		}
		switch token {
		case "dora-token":
			return fid("s-1", "dora"), nil
		case "erin-token":
			return fid("s-2", "erin"), nil
		}
		return FederatedIdentity{}, errors.New("bad token")
	})
	for _, body := range []string{
		`{"currentPassword":"anything1","newPassword":"password9"}`,
		`{"provider":"corp","subjectToken":"erin-token","newPassword":"password9"}`,
		`{"provider":"corp","subjectToken":"forged","newPassword":"password9"}`,
		`{"provider":"other","subjectToken":"dora-token","newPassword":"password9"}`,
	} {
		if r := e.as(tk.UserID, http.MethodPost, "/auth/password", body); r.Code != http.StatusForbidden {
			t.Fatalf("%s: %d %s", body, r.Code, r.Body)
		}
	}
	if has, err := e.svc.HasPassword(tk.UserID); err != nil || has {
		t.Fatalf("dora has a password after refused changes: %v %v", has, err)
	}
	e.clock.Advance(time.Second)
	r := e.as(tk.UserID, http.MethodPost, "/auth/password", `{"provider":"corp","subjectToken":"dora-token","newPassword":"password9"}`)
	if r.Code != http.StatusOK {
		t.Fatalf("change by provider: %d %s", r.Code, r.Body)
	}
	if _, err := e.svc.VerifyAccessToken(tk.AccessToken); !errors.Is(err, wire.ErrBadToken) {
		t.Fatalf("dora's access token from before: %v", err)
	}
	e.login(tk.UserID, "password9")
	if has, err := e.svc.HasPassword(tk.UserID); err != nil || !has {
		t.Fatalf("dora has no password after the change: %v %v", has, err)
	}
}

// An admin resets a password with no proof: the user's sessions end, the
// new password works. Unknown users and bad bodies change nothing.
func TestResetPassword(t *testing.T) {
	e := newEnv(t)
	e.register("alice", "password1")
	tk := e.login("alice", "password1")
	ctx := context.Background()
	for _, c := range []struct {
		path, body string
		status     int
		code       string
	}{
		{"/admin/users/nobody/password", `{"password":"password9"}`, 404, httpapi.CodeNotFound},
		{"/admin/users/Not!AName/password", `{"password":"password9"}`, 400, httpapi.CodeValidation},
		{"/admin/users/alice/password", `{"password":"short"}`, 400, CodeInvalidPassword},
		{"/admin/users/alice/password", `{"pass":"password9"}`, 400, httpapi.CodeUnknownField},
	} {
		if r := e.as("root", http.MethodPut, c.path, c.body); r.Code != c.status || r.errCode() != c.code {
			t.Fatalf("PUT %s %s: %d %s, want %d %s", c.path, c.body, r.Code, r.Body, c.status, c.code)
		}
	}
	if _, err := e.svc.Refresh(ctx, tk.RefreshToken); err != nil {
		t.Fatalf("alice's session after refused resets: %v", err)
	}
	tk = e.login("alice", "password1")
	e.clock.Advance(time.Second)
	r := e.as("root", http.MethodPut, "/admin/users/alice/password", `{"password":"password9"}`)
	var got struct {
		UserID  string
		Revoked int
	}
	if err := json.Unmarshal(r.Body, &got); r.Code != http.StatusOK || err != nil || got.UserID != "alice" || got.Revoked != 2 {
		t.Fatalf("reset: %d %s, want alice and 2 revoked", r.Code, r.Body)
	}
	if _, err := e.svc.Refresh(ctx, tk.RefreshToken); !errors.Is(err, ErrRefreshInvalid) {
		t.Fatalf("alice's session after the reset: %v", err)
	}
	if _, err := e.svc.VerifyAccessToken(tk.AccessToken); !errors.Is(err, wire.ErrBadToken) {
		t.Fatalf("alice's access token after the reset: %v", err)
	}
	if r := e.post("/auth/login", map[string]string{"username": "alice", "password": "password1"}); r.Code != http.StatusUnauthorized {
		t.Fatalf("login with the old password: %d %s", r.Code, r.Body)
	}
	e.login("alice", "password9")
}

// Wrong current passwords are rate limited as logins are: the limit
// answers 429 before any hash is computed.
func TestChangePasswordWrongPasswordsAreRateLimited(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.LoginPerUser = ratelimit.Spec{Rate: 1.0 / 3600, Burst: 3} })
	e.register("alice", "password1")
	for i := range 3 {
		if r := e.as("alice", http.MethodPost, "/auth/password", `{"currentPassword":"wrong-pass","newPassword":"password9"}`); r.Code != http.StatusForbidden {
			t.Fatalf("wrong password %d: %d %s", i, r.Code, r.Body)
		}
	}
	verifies := e.svc.hasher.verifies.Load()
	r := e.as("alice", http.MethodPost, "/auth/password", `{"currentPassword":"password1","newPassword":"password9"}`)
	if r.Code != http.StatusTooManyRequests || r.Header.Get("Retry-After") == "" {
		t.Fatalf("after the limit: %d %s", r.Code, r.Body)
	}
	if n := e.svc.hasher.verifies.Load(); n != verifies {
		t.Fatalf("a refused attempt computed %d hashes", n-verifies)
	}
}

// With password sign-in turned off, passwords cannot be set either.
func TestPasswordChangeWithPasswordLoginOff(t *testing.T) {
	e := newEnv(t)
	e.register("alice", "password1")
	e.svc.cfg.NoPasswordLogin = true
	for _, c := range []struct{ method, path, body string }{
		{http.MethodPost, "/auth/password", `{"currentPassword":"password1","newPassword":"password9"}`},
		{http.MethodPut, "/admin/users/alice/password", `{"password":"password9"}`},
	} {
		uid := "alice"
		if c.method == http.MethodPut {
			uid = "root"
		}
		if r := e.as(uid, c.method, c.path, c.body); r.Code != http.StatusForbidden || r.errCode() != CodePasswordLoginOff {
			t.Fatalf("%s %s: %d %s", c.method, c.path, r.Code, r.Body)
		}
	}
	e.svc.cfg.NoPasswordLogin = false
	e.login("alice", "password1")
}

// The new hash and the sign-out are one entry: applied alone, the
// command revokes the sessions and records the sign-out (the follow-up
// steps only finish a user with more sessions, or serve older nodes).
func TestPasswordCommandSignsOutInItsOwnEntry(t *testing.T) {
	e := newEnv(t)
	e.register("alice", "password1")
	tk := e.login("alice", "password1")
	e.clock.Advance(time.Second)
	ctx := context.Background()
	hash := e.svc.hasher.hash("password9")
	b, _ := json.Marshal(accountUpdateCmd{UID: "alice", Hash: &hash, SignOut: true, At: e.clock.Now().UTC()})
	v, err := e.prop.Propose(ctx, wire.CmdAccountUpdate, b)
	if err != nil {
		t.Fatal(err)
	}
	if c, ok := v.(*revokeAllCommitted); !ok || c.step.Revoked != 1 || !c.step.Done {
		t.Fatalf("the command answered %#v, want one step that revoked 1 and is done", v)
	}
	if _, err := e.svc.Refresh(ctx, tk.RefreshToken); !errors.Is(err, ErrRefreshInvalid) {
		t.Fatalf("alice's session after the command: %v", err)
	}
	if _, err := e.svc.VerifyAccessToken(tk.AccessToken); !errors.Is(err, wire.ErrBadToken) {
		t.Fatalf("alice's access token after the command: %v", err)
	}
	// Without SignOut (an admin flag, as before) nobody is signed out.
	e.clock.Advance(time.Second)
	tk = e.login("alice", "password9")
	admin := true
	b, _ = json.Marshal(accountUpdateCmd{UID: "alice", Admin: &admin, At: e.clock.Now().UTC()})
	if v, err := e.prop.Propose(ctx, wire.CmdAccountUpdate, b); err != nil || v != nil {
		t.Fatalf("an admin flag update: %v %v", v, err)
	}
	if _, err := e.svc.Refresh(ctx, tk.RefreshToken); err != nil {
		t.Fatalf("alice's session after an admin flag update: %v", err)
	}
}
