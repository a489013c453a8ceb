package auth

import (
	"fmt"
	"net/http"
	"testing"
)

// Someone who guesses a user's password at the login throttles the
// login of that name (as documented), but not what the signed-in user
// does to defend the account: changing the password with the right
// current one, or proving themselves to delete it or link a provider.
// Before, those shared the bucket of failed logins by username, so an
// attacker's ten wrong logins from anywhere left the victim unable to
// change the password that was being guessed (429) for as long as the
// attacker went on.
func TestOthersFailedLoginsDoNotLockTheUserOutOfAPasswordChange(t *testing.T) {
	e := newEnv(t)
	e.register("alice", "password1")
	for i := 0; ; i++ {
		r := e.do(http.MethodPost, "/auth/login", `{"username":"alice","password":"guess-`+fmt.Sprint(i)+`"}`, fmt.Sprintf("198.51.100.%d", i+1))
		if r.Code == http.StatusTooManyRequests {
			break
		}
		if r.Code != http.StatusUnauthorized || i > 50 {
			t.Fatalf("guess %d: %d %s", i, r.Code, r.Body)
		}
	}
	// The login of the name is throttled, as documented.
	if r := e.post("/auth/login", map[string]string{"username": "alice", "password": "password1"}); r.Code != http.StatusTooManyRequests {
		t.Fatalf("login after the guesses: %d %s", r.Code, r.Body)
	}
	// Alice, signed in on her phone, changes her password.
	r := e.as("alice", http.MethodPost, "/auth/password", `{"currentPassword":"password1","newPassword":"password9"}`)
	if r.Code != http.StatusOK {
		t.Fatalf("alice's password change after someone else's failed logins: %d %s", r.Code, r.Body)
	}
	// Her own wrong proofs are still throttled (TestChangePasswordWrongPasswordsAreRateLimited).
}
