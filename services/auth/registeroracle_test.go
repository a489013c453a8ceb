package auth

import (
	"fmt"
	"net/http"
	"testing"
)

// A sign-up sent again with its Idempotency-Key answers 200 for the
// account's password and 422 for another: a password check, so wrong
// passwords are throttled as failed logins of the name are. Before, the
// replay answered every guess (only the auth class's 5 a second per
// address bounded it): whoever learned a sign-up's key, a header that
// proxies log, could guess the new account's password far faster than
// the login allows.
func TestSignUpReplayIsNoUnthrottledPasswordCheck(t *testing.T) {
	e := newEnv(t)
	register := func(pw, ip string) resp {
		req := httpRequest(http.MethodPost, "/auth/register", `{"username":"bob","password":"`+pw+`"}`, "application/json")
		req.Header.Set("Idempotency-Key", "signup-key-1")
		req.RemoteAddr = ip + ":40000"
		rec := serve(e, req)
		return resp{Code: rec.Code, Header: rec.Header(), Body: rec.Body.Bytes()}
	}
	if r := register("bob-password", "192.0.2.1"); r.Code != http.StatusCreated {
		t.Fatalf("sign-up: %d %s", r.Code, r.Body)
	}
	limited := false
	for i := 0; i < 30 && !limited; i++ {
		r := register(fmt.Sprintf("guess-%04d", i), fmt.Sprintf("198.51.100.%d", i+1))
		switch {
		case r.Code == http.StatusTooManyRequests && r.errCode() == "rate_limited":
			limited = true
		case r.Code != http.StatusUnprocessableEntity:
			t.Fatalf("guess %d: %d %s", i, r.Code, r.Body)
		}
	}
	if !limited {
		t.Fatal("30 wrong passwords sent with the sign-up's key were never throttled")
	}
	// Nor does the right password get through while the name is throttled.
	if r := register("bob-password", "203.0.113.9"); r.Code != http.StatusTooManyRequests {
		t.Fatalf("the right password while throttled: %d %s", r.Code, r.Body)
	}
}
