package node_test

import (
	"net/http"
	"testing"

	"github.com/edgechat/edgechat/bridge/push/pushtest"
	"github.com/edgechat/edgechat/node/nodetest"
)

// A phone that is signed out from elsewhere (a lost or stolen phone:
// its session ended from the laptop, or "sign out everywhere") must not
// go on showing the user's messages on its lock screen: its push
// registration goes with its session, as it does when the phone signs
// out itself.

// bobPhone signs bob in on his phone (device "phone") and registers its
// push token from that session; it returns the phone's APNs token.
func bobPhone(t *testing.T, f *pushFlow) string {
	t.Helper()
	var tk struct{ AccessToken string }
	if st := api(t, f.n, "", http.MethodPost, "/auth/login", map[string]string{"username": "bob",
		"password": nodetest.Password("bob"), "device": "phone"}, &tk); st != http.StatusOK {
		t.Fatalf("bob signs in on the phone: %d", st)
	}
	token := pushtest.NewDeviceToken()
	if st := api(t, f.n, tk.AccessToken, http.MethodPost, "/user/me/devices",
		map[string]any{"device": "phone", "platform": "apns", "token": token}, nil); st != http.StatusOK {
		t.Fatalf("the phone registers: %d", st)
	}
	return token
}

func TestPushNotToThePhoneOfASessionEndedElsewhere(t *testing.T) {
	f := startPushFlow(t, 0)
	phone := bobPhone(t, f)
	var list struct {
		Sessions []struct{ ID, Device string }
	}
	if st := api(t, f.n, f.bob, http.MethodGet, "/auth/sessions", nil, &list); st != http.StatusOK {
		t.Fatalf("sessions: %d", st)
	}
	sid := ""
	for _, s := range list.Sessions {
		if s.Device == "phone" {
			sid = s.ID
		}
	}
	if sid == "" {
		t.Fatalf("no session of the phone in %+v", list.Sessions)
	}
	if st := api(t, f.n, f.bob, http.MethodDelete, "/auth/sessions/"+sid, nil, nil); st != http.StatusNoContent {
		t.Fatalf("ending the phone's session: %d", st)
	}
	var devs struct{ Devices []struct{ Device string } }
	if st := api(t, f.n, f.bob, http.MethodGet, "/user/me/devices", nil, &devs); st != http.StatusOK {
		t.Fatalf("devices: %d", st)
	}
	if len(devs.Devices) != 0 {
		t.Errorf("the ended session's phone is still registered: %+v", devs.Devices)
	}
	id := f.send(t, "user/bob/newMessage", "bob, the door code is 4711")
	f.outboxEmpty(t)
	if n := f.pushesFor(phone, id); n != 0 {
		t.Errorf("the phone of an ended session was pushed %d times", n)
	}
}

func TestPushNotToThePhoneAfterSigningOutEverywhere(t *testing.T) {
	f := startPushFlow(t, 0)
	phone := bobPhone(t, f)
	if st := api(t, f.n, f.bob, http.MethodPost, "/auth/logout-all", map[string]any{}, nil); st != http.StatusOK {
		t.Fatalf("logout-all: %d", st)
	}
	id := f.send(t, "user/bob/newMessage", "bob, the door code is 4711")
	f.outboxEmpty(t)
	if n := f.pushesFor(phone, id); n != 0 {
		t.Errorf("the phone was pushed %d times after bob signed out everywhere", n)
	}
}
