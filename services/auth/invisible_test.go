package auth

import (
	"net/http"
	"testing"

	"github.com/edgechat/edgechat/internal/httpapi"
)

// The device a sign-in names is new input: C1 controls, bidi controls
// and other invisible characters are refused (the session list shows
// it, session.created carries it), as the broker refuses them in a
// CONNECT. A sign-out may still name a device of an earlier version,
// whose push registration it removes.
func TestLoginRefusesAnInvisibleDeviceLogoutTakesAnOldOne(t *testing.T) {
	e := newEnv(t)
	e.register("alice", "password1")
	for _, dev := range []string{"phone\u0085", "enohp\u202e", "\u200bphone", "\u009b31m"} {
		r := e.post("/auth/login", map[string]string{"username": "alice", "password": "password1", "device": dev})
		if r.Code != http.StatusBadRequest || r.errCode() != httpapi.CodeValidation {
			t.Errorf("login from device %+q: %d %s, want 400 %s", dev, r.Code, r.Body, httpapi.CodeValidation)
		}
	}
	tk := e.loginFrom("alice", "password1", "Alice's phone", "x")
	if r := e.post("/auth/logout", map[string]string{"refreshToken": tk.RefreshToken, "device": "old\u0085phone"}); r.Code != http.StatusNoContent {
		t.Fatalf("logout naming a device of an earlier version: %d %s", r.Code, r.Body)
	}
}
