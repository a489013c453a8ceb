package node_test

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/edgechat/edgechat/bridge/push/pushtest"
	"github.com/edgechat/edgechat/node/nodetest"
)

// signInOn signs bob in on device and returns the session's tokens.
func signInOn(t *testing.T, n *nodetest.Node, user, device string) (access, refresh string) {
	t.Helper()
	var tk struct{ AccessToken, RefreshToken string }
	if st := api(t, n, "", http.MethodPost, "/auth/login", map[string]string{"username": user,
		"password": nodetest.Password(user), "device": device}, &tk); st != http.StatusOK {
		t.Fatalf("%s signs in on %s: %d", user, device, st)
	}
	return tk.AccessToken, tk.RefreshToken
}

// Registrations whose sign-in session has ended bring their device
// nothing (TestPushNotToAPhoneThatRegisteredAfterItsSignOut) and must not
// hold a place among the 20 a user may have: bob, whose app registered
// again as each of 20 phones was signed out, can still register the
// phone he signs in on now; 20 live registrations still refuse a 21st.
func TestRegistrationsOfEndedSessionsGiveWayAtTheDeviceLimit(t *testing.T) {
	f := startPushFlow(t, 0)
	// f registered bob's "phone" outside any session (a live one): 19 more
	// dead ones fill the 20 places.
	for i := range 19 {
		dev := fmt.Sprintf("old%d", i)
		access, refresh := signInOn(t, f.n, "bob", dev)
		if st := api(t, f.n, "", http.MethodPost, "/auth/logout", map[string]string{"refreshToken": refresh, "device": dev}, nil); st != http.StatusNoContent {
			t.Fatalf("logout of %s: %d", dev, st)
		}
		if st := api(t, f.n, access, http.MethodPost, "/user/me/devices",
			map[string]any{"device": dev, "platform": "apns", "token": pushtest.NewDeviceToken()}, nil); st != http.StatusOK {
			t.Fatalf("%s registers after its sign-out: %d", dev, st)
		}
	}
	var list struct{ Devices []struct{ Device string } }
	if st := api(t, f.n, f.bob, http.MethodGet, "/user/me/devices", nil, &list); st != http.StatusOK || len(list.Devices) != 20 {
		t.Fatalf("bob's devices before: %d, %d listed, want 20", st, len(list.Devices))
	}
	access, _ := signInOn(t, f.n, "bob", "newphone")
	if st := api(t, f.n, access, http.MethodPost, "/user/me/devices",
		map[string]any{"device": "newphone", "platform": "apns", "token": pushtest.NewDeviceToken()}, nil); st != http.StatusOK {
		t.Fatalf("the phone bob signed in on registers: %d, want 200 (19 of the 20 registrations are of ended sessions)", st)
	}
	list.Devices = nil
	if st := api(t, f.n, f.bob, http.MethodGet, "/user/me/devices", nil, &list); st != http.StatusOK {
		t.Fatalf("bob's devices after: %d", st)
	}
	names := map[string]bool{}
	for _, d := range list.Devices {
		names[d.Device] = true
	}
	if !names["phone"] || !names["newphone"] || len(list.Devices) >= 20 {
		t.Errorf("bob's devices after: %v; want phone and newphone kept and the ended sessions' gone", names)
	}

	// 20 live registrations: the 21st is refused.
	for i := len(list.Devices); i < 20; i++ {
		dev := fmt.Sprintf("live%d", i)
		access, _ := signInOn(t, f.n, "bob", dev)
		if st := api(t, f.n, access, http.MethodPost, "/user/me/devices",
			map[string]any{"device": dev, "platform": "apns", "token": pushtest.NewDeviceToken()}, nil); st != http.StatusOK {
			t.Fatalf("%s registers: %d", dev, st)
		}
	}
	access, _ = signInOn(t, f.n, "bob", "onetoomany")
	if st := api(t, f.n, access, http.MethodPost, "/user/me/devices",
		map[string]any{"device": "onetoomany", "platform": "apns", "token": pushtest.NewDeviceToken()}, nil); st != http.StatusConflict {
		t.Errorf("a 21st device beside 20 signed-in ones: %d, want 409", st)
	}
}
