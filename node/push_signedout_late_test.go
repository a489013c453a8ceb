package node_test

import (
	"net/http"
	"testing"

	"github.com/edgechat/edgechat/bridge/push/pushtest"
	"github.com/edgechat/edgechat/node/nodetest"
)

// bob signs out on his phone while the app, at the same moment, registers
// its push token again with the access token of that session (which
// stays valid until it expires): the registration arrives after the
// sign-out removed the phone's, and must not bring the signed-out phone
// bob's messages.
func TestPushNotToAPhoneThatRegisteredAfterItsSignOut(t *testing.T) {
	f := startPushFlow(t, 0)
	var tk struct{ AccessToken, RefreshToken string }
	if st := api(t, f.n, "", http.MethodPost, "/auth/login", map[string]string{"username": "bob",
		"password": nodetest.Password("bob"), "device": "phone2"}, &tk); st != http.StatusOK {
		t.Fatalf("bob signs in on the phone: %d", st)
	}
	token := pushtest.NewDeviceToken()
	if st := api(t, f.n, "", http.MethodPost, "/auth/logout", map[string]string{"refreshToken": tk.RefreshToken, "device": "phone2"}, nil); st != http.StatusNoContent {
		t.Fatalf("logout: %d", st)
	}
	st := api(t, f.n, tk.AccessToken, http.MethodPost, "/user/me/devices",
		map[string]any{"device": "phone2", "platform": "apns", "token": token}, nil)
	t.Logf("registration after the sign-out: %d", st)
	if n := pushesOfNewMessage(t, f, token); n != 0 {
		t.Errorf("the signed-out phone got %d pushes of bob's message", n)
	}
}
