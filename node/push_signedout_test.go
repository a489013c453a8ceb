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
// pushesOfNewMessage sends bob a message, waits until its push is
// decided and returns how many times phone was pushed with it.
func pushesOfNewMessage(t *testing.T, f *pushFlow, phone string) int {
	t.Helper()
	id := f.send(t, "user/bob/newMessage", "bob, the door code is 4711")
	f.outboxEmpty(t)
	return f.pushesFor(phone, id)
}

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
	if n := pushesOfNewMessage(t, f, phone); n != 0 {
		t.Errorf("the phone of an ended session was pushed %d times", n)
	}
}

func TestPushNotToThePhoneAfterSigningOutEverywhere(t *testing.T) {
	f := startPushFlow(t, 0)
	phone := bobPhone(t, f)
	if st := api(t, f.n, f.bob, http.MethodPost, "/auth/logout-all", map[string]any{}, nil); st != http.StatusOK {
		t.Fatalf("logout-all: %d", st)
	}
	if n := pushesOfNewMessage(t, f, phone); n != 0 {
		t.Errorf("the phone was pushed %d times after bob signed out everywhere", n)
	}
}

// A password change signs out every other session: the phone stops being
// pushed when the password is changed on the laptop.
func TestPushNotToThePhoneAfterAPasswordChangeElsewhere(t *testing.T) {
	f := startPushFlow(t, 0)
	phone := bobPhone(t, f)
	if st := api(t, f.n, f.bob, http.MethodPost, "/auth/password", map[string]any{
		"currentPassword": nodetest.Password("bob"), "newPassword": "a-new-password-1"}, nil); st != http.StatusOK {
		t.Fatalf("password change: %d", st)
	}
	if n := pushesOfNewMessage(t, f, phone); n != 0 {
		t.Errorf("the phone was pushed %d times after bob changed his password on the laptop", n)
	}
}

// The phone that changes the password stays signed in: it is still
// pushed, and its session still names it.
func TestPushStillToThePhoneThatChangedThePassword(t *testing.T) {
	f := startPushFlow(t, 0)
	var tk struct{ AccessToken string }
	if st := api(t, f.n, "", http.MethodPost, "/auth/login", map[string]string{"username": "bob",
		"password": nodetest.Password("bob"), "device": "phone"}, &tk); st != http.StatusOK {
		t.Fatalf("bob signs in on the phone: %d", st)
	}
	if st := api(t, f.n, tk.AccessToken, http.MethodPost, "/user/me/devices",
		map[string]any{"device": "phone", "platform": "apns", "token": f.phone}, nil); st != http.StatusOK {
		t.Fatalf("the phone registers: %d", st)
	}
	var changed struct{ AccessToken string }
	if st := api(t, f.n, tk.AccessToken, http.MethodPost, "/auth/password", map[string]any{
		"currentPassword": nodetest.Password("bob"), "newPassword": "a-new-password-1"}, &changed); st != http.StatusOK {
		t.Fatalf("password change: %d", st)
	}
	var list struct {
		Sessions []struct {
			Device  string
			Current bool
		}
	}
	if st := api(t, f.n, changed.AccessToken, http.MethodGet, "/auth/sessions", nil, &list); st != http.StatusOK ||
		len(list.Sessions) != 1 || list.Sessions[0].Device != "phone" || !list.Sessions[0].Current {
		t.Errorf("the sessions after the change: %d %+v", st, list.Sessions)
	}
	id := f.send(t, "user/bob/newMessage", "still there?")
	f.outboxEmpty(t)
	if n := f.pushesFor(f.phone, id); n != 1 {
		t.Errorf("the phone that changed the password was pushed %d times, want 1", n)
	}
}

// An admin resets bob's password (an account taken over): every session
// ends, and the phone is no longer pushed.
func TestPushNotToThePhoneAfterAnAdminResetsThePassword(t *testing.T) {
	f := startPushFlow(t, 0) // alice, the first account, is an admin
	phone := bobPhone(t, f)
	if st := api(t, f.n, f.alice, http.MethodPut, "/admin/users/bob/password",
		map[string]string{"password": "a-new-password-1"}, nil); st != http.StatusOK {
		t.Fatalf("password reset: %d", st)
	}
	if n := pushesOfNewMessage(t, f, phone); n != 0 {
		t.Errorf("the phone was pushed %d times after an admin reset bob's password", n)
	}
}

// An admin suspends bob's account (taken over, say): every session ends,
// and no phone of it goes on showing his messages.
func TestPushNotToThePhoneOfASuspendedAccount(t *testing.T) {
	f := startPushFlow(t, 0) // alice, the first account, is an admin
	phone := bobPhone(t, f)
	if st := api(t, f.n, f.alice, http.MethodPut, "/admin/users/bob/suspended",
		map[string]bool{"suspended": true}, nil); st != http.StatusOK {
		t.Fatalf("suspend: %d", st)
	}
	if n := pushesOfNewMessage(t, f, phone); n != 0 {
		t.Errorf("the phone of a suspended account was pushed %d times", n)
	}
}

// The phone signed in again (a second session naming it): ending its
// older session from the laptop leaves it registered, as it is still
// signed in.
func TestPushStillToAPhoneSignedInAgainWhenItsOldSessionEnds(t *testing.T) {
	f := startPushFlow(t, 0)
	phone := bobPhone(t, f)
	var list struct {
		Sessions []struct{ ID, Device string }
	}
	if st := api(t, f.n, f.bob, http.MethodGet, "/auth/sessions", nil, &list); st != http.StatusOK {
		t.Fatalf("sessions: %d", st)
	}
	old := ""
	for _, s := range list.Sessions {
		if s.Device == "phone" {
			old = s.ID
		}
	}
	var tk struct{ AccessToken string }
	if st := api(t, f.n, "", http.MethodPost, "/auth/login", map[string]string{"username": "bob",
		"password": nodetest.Password("bob"), "device": "phone"}, &tk); st != http.StatusOK {
		t.Fatalf("bob signs in on the phone again: %d", st)
	}
	if st := api(t, f.n, f.bob, http.MethodDelete, "/auth/sessions/"+old, nil, nil); st != http.StatusNoContent {
		t.Fatalf("ending the phone's old session: %d", st)
	}
	id := f.send(t, "user/bob/newMessage", "still there?")
	f.outboxEmpty(t)
	if n := f.pushesFor(phone, id); n != 1 {
		t.Errorf("the phone, signed in again, was pushed %d times, want 1", n)
	}
}

// unnamedPhone signs bob in on another phone whose app names no device,
// which registers for push as "phone2"; it returns the sign-in's tokens
// and the phone's APNs token.
func unnamedPhone(t *testing.T, f *pushFlow) (tk struct{ AccessToken, RefreshToken string }, token string) {
	t.Helper()
	if st := api(t, f.n, "", http.MethodPost, "/auth/login", map[string]string{"username": "bob",
		"password": nodetest.Password("bob")}, &tk); st != http.StatusOK {
		t.Fatalf("bob signs in on the other phone: %d", st)
	}
	token = pushtest.NewDeviceToken()
	if st := api(t, f.n, tk.AccessToken, http.MethodPost, "/user/me/devices",
		map[string]any{"device": "phone2", "platform": "apns", "token": token}, nil); st != http.StatusOK {
		t.Fatalf("the other phone registers: %d", st)
	}
	return tk, token
}

// A phone whose app named no device when it signed in (a client of our
// API other than ours) has its push registration go with its session,
// as a phone that named itself: when the session is ended from the
// laptop and when the phone signs itself out (the registration belongs
// to the session that made it). Such a phone went on showing bob's
// messages on its lock screen after either.
func TestPushNotToAPhoneThatNamedNoDeviceAtSignIn(t *testing.T) {
	for _, how := range []string{"ended elsewhere", "signed out"} {
		t.Run(how, func(t *testing.T) {
			f := startPushFlow(t, 0) // bob's laptop registered a device "phone"
			tk, other := unnamedPhone(t, f)
			if how == "ended elsewhere" {
				var list struct {
					Sessions []struct {
						ID      string
						Current bool
					}
				}
				if st := api(t, f.n, tk.AccessToken, http.MethodGet, "/auth/sessions", nil, &list); st != http.StatusOK {
					t.Fatalf("sessions: %d", st)
				}
				sid := ""
				for _, s := range list.Sessions {
					if s.Current {
						sid = s.ID
					}
				}
				if st := api(t, f.n, f.bob, http.MethodDelete, "/auth/sessions/"+sid, nil, nil); st != http.StatusNoContent {
					t.Fatalf("ending the other phone's session: %d", st)
				}
			} else if st := api(t, f.n, "", http.MethodPost, "/auth/logout",
				map[string]string{"refreshToken": tk.RefreshToken}, nil); st != http.StatusNoContent {
				t.Fatalf("the other phone signs out: %d", st)
			}
			var devs struct{ Devices []struct{ Device string } }
			if st := api(t, f.n, f.bob, http.MethodGet, "/user/me/devices", nil, &devs); st != http.StatusOK {
				t.Fatalf("devices: %d", st)
			}
			if len(devs.Devices) != 1 || devs.Devices[0].Device != "phone" {
				t.Errorf("devices after the other phone signed out: %+v, want the laptop's phone only", devs.Devices)
			}
			if n := pushesOfNewMessage(t, f, other); n != 0 {
				t.Errorf("the signed-out phone was pushed %d times", n)
			}
		})
	}
}

// The phone that named no device changes the password: it stays signed
// in and pushed (the registration goes on with its new session), and
// when it signs out afterwards the registration goes.
func TestPushFollowsAPhoneThatNamedNoDeviceThroughAPasswordChange(t *testing.T) {
	f := startPushFlow(t, 0)
	tk, other := unnamedPhone(t, f)
	var changed struct{ AccessToken, RefreshToken string }
	if st := api(t, f.n, tk.AccessToken, http.MethodPost, "/auth/password", map[string]any{
		"currentPassword": nodetest.Password("bob"), "newPassword": "a-new-password-1"}, &changed); st != http.StatusOK {
		t.Fatalf("password change: %d", st)
	}
	if n := pushesOfNewMessage(t, f, other); n != 1 {
		t.Fatalf("the phone that changed the password was pushed %d times, want 1", n)
	}
	if st := api(t, f.n, "", http.MethodPost, "/auth/logout",
		map[string]string{"refreshToken": changed.RefreshToken}, nil); st != http.StatusNoContent {
		t.Fatalf("the other phone signs out: %d", st)
	}
	if n := pushesOfNewMessage(t, f, other); n != 0 {
		t.Errorf("the signed-out phone was pushed %d times", n)
	}
}
