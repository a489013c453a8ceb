package auth

import (
	"errors"
	"net/http"
	"testing"
)

// A sign-up whose account committed but whose profile did not (a leader
// change between the two) left an account without a profile for good:
// the user could sign in but not be found, added or messaged, and a
// sign-up sent again without a key was told the name is taken. The
// account's next sign-in makes the profile, under the display name the
// sign-up asked for (kept with the account).
func TestSignInMakesTheProfileASignUpFailedToMake(t *testing.T) {
	e := newEnv(t)
	e.profiles.err = errors.New("leadership lost while committing log")
	if r := e.post("/auth/register", map[string]string{"username": "alice", "password": "alice-password", "displayName": "Alice"}); r.Code == http.StatusCreated {
		t.Fatalf("register with its profile failing: %d %s", r.Code, r.Body)
	}
	if _, ok := e.profiles.get("alice"); ok {
		t.Fatal("the profile was made")
	}
	e.profiles.mu.Lock()
	e.profiles.err = nil
	e.profiles.mu.Unlock()
	if r := e.post("/auth/register", map[string]string{"username": "alice", "password": "alice-password"}); r.Code != http.StatusConflict {
		t.Fatalf("the sign-up sent again without a key: %d %s", r.Code, r.Body)
	}
	e.login("alice", "alice-password")
	if name, ok := e.profiles.get("alice"); !ok || name != "Alice" {
		t.Fatalf("profile after the sign-in: %q %v", name, ok)
	}
}
