package auth

import (
	"context"
	"errors"
	"net/http"
	"testing"
)

// keepingProfiles is fakeProfiles whose CreateProfile keeps an existing
// profile, as *users.Service's does ("Create keeps an existing profile").
type keepingProfiles struct{ *fakeProfiles }

func (k keepingProfiles) CreateProfile(ctx context.Context, uid, displayName string) error {
	if _, ok := k.get(uid); ok {
		return nil
	}
	return k.fakeProfiles.CreateProfile(ctx, uid, displayName)
}

func (k keepingProfiles) HasProfile(uid string) bool { return k.fakeProfiles.HasProfile(uid) }

// A sign-up with an Idempotency-Key whose account committed and whose
// profile did not (a leader change between the two), then a sign-in (on
// another device, or the app signing in after the error), then the
// sign-up sent again with its key: the retry answers 200 and
// protocol.md says it makes the profile the first attempt failed to
// make, but the sign-in had made it already under the username (the
// display name of the sign-up was gone), and making a profile keeps an
// existing one: the user's chosen display name was lost for good behind
// a sign-up that answered success. The sign-up's display name is kept
// with the account, and the sign-in's repair uses it.
func TestKeyedSignUpRepairedBySignInKeepsItsDisplayName(t *testing.T) {
	e := newEnv(t)
	e.svc.profiles = keepingProfiles{e.profiles}
	signUp := func() resp {
		req := httpRequest(http.MethodPost, "/auth/register",
			`{"username":"alice","password":"alice-password","displayName":"Alice Liddell"}`, "application/json")
		req.Header.Set("Idempotency-Key", "signup-key-1")
		rec := serve(e, req)
		return resp{Code: rec.Code, Header: rec.Header(), Body: rec.Body.Bytes()}
	}
	e.profiles.mu.Lock()
	e.profiles.err = errors.New("leadership lost while committing log")
	e.profiles.mu.Unlock()
	if r := signUp(); r.Code == http.StatusCreated || r.Code == http.StatusOK {
		t.Fatalf("sign-up with its profile failing: %d %s", r.Code, r.Body)
	}
	e.profiles.mu.Lock()
	e.profiles.err = nil
	e.profiles.mu.Unlock()
	e.login("alice", "alice-password") // repairs the missing profile
	if r := signUp(); r.Code != http.StatusOK {
		t.Fatalf("the sign-up sent again with its key: %d %s", r.Code, r.Body)
	}
	if name, ok := e.profiles.get("alice"); !ok || name != "Alice Liddell" {
		t.Fatalf("display name after the sign-up answered 200: %q (profile %v), want %q", name, ok, "Alice Liddell")
	}
}
