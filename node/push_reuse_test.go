package node_test

import (
	"net/http"
	"testing"

	"github.com/edgechat/edgechat/bridge/push/pushtest"
	"github.com/edgechat/edgechat/node/nodetest"
)

// A stolen refresh token: the thief refreshes first and registers its
// own phone for push with the access token it got; when the owner's app
// presents its (now spent) refresh token the theft is detected and the
// session ends. The thief's phone must stop getting the user's messages
// on its lock screen, and its access token stops working.
func TestPushNotToTheThiefsPhoneOnceRefreshReuseEndsTheSession(t *testing.T) {
	f := startPushFlow(t, 0)
	var owner struct{ AccessToken, RefreshToken string }
	if st := api(t, f.n, "", http.MethodPost, "/auth/login", map[string]string{"username": "bob",
		"password": nodetest.Password("bob")}, &owner); st != http.StatusOK {
		t.Fatalf("bob signs in: %d", st)
	}
	var thief struct{ AccessToken, RefreshToken string }
	if st := api(t, f.n, "", http.MethodPost, "/auth/refresh", map[string]string{"refreshToken": owner.RefreshToken}, &thief); st != http.StatusOK {
		t.Fatalf("the thief refreshes the stolen token: %d", st)
	}
	phone := pushtest.NewDeviceToken()
	if st := api(t, f.n, thief.AccessToken, http.MethodPost, "/user/me/devices",
		map[string]any{"device": "burner", "platform": "apns", "token": phone}, nil); st != http.StatusOK {
		t.Fatalf("the thief's phone registers: %d", st)
	}
	if st := api(t, f.n, "", http.MethodPost, "/auth/refresh", map[string]string{"refreshToken": owner.RefreshToken}, nil); st != http.StatusUnauthorized {
		t.Fatalf("the owner's spent token: %d, want 401 refresh_reused", st)
	}
	if st := api(t, f.n, thief.AccessToken, http.MethodGet, "/auth/sessions", nil, nil); st != http.StatusUnauthorized {
		t.Errorf("the thief's access token after the reuse: %d, want 401", st)
	}
	if n := pushesOfNewMessage(t, f, phone); n != 0 {
		t.Errorf("the thief's phone was pushed %d times after the reuse ended the session", n)
	}
	if n := pushesOfNewMessage(t, f, f.phone); n != 1 {
		t.Errorf("bob's own phone (another session) was pushed %d times, want 1", n)
	}
}
