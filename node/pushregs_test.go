package node_test

import (
	"testing"
	"time"

	"github.com/edgechat/edgechat/node/nodetest"
)

// A push goes to the registrations as they are when the grace period
// ends, not as they were at the commit.

// changeGrace is the grace period of these tests: each changes bob's
// registrations (an HTTP call and a commit) within it, which must land
// in time on a loaded machine as well.
const changeGrace = 3 * time.Second

// bob's phone changes hands within the grace period: carol signs in on
// it and registers its token, which moves to her. bob's message (its
// text) must not reach the phone that is now carol's.
func TestPushNotToATokenThatMovedToAnotherUserDuringTheGrace(t *testing.T) {
	f := startPushFlowGrace(t, 0, changeGrace)
	carol := f.n.NewUser(t, "carol")
	id := f.send(t, "user/bob/newMessage", "bob, the door code is 4711")
	if st := api(t, f.n, carol, "POST", "/user/me/devices",
		map[string]any{"device": "phone", "platform": "apns", "token": f.phone}, nil); st != 200 {
		t.Fatalf("carol registers the phone: %d", st)
	}
	f.outboxEmpty(t)
	for _, r := range f.m.apns.Requests() {
		if r.Token == f.phone && r.Custom["messageId"] == id {
			t.Errorf("bob's message pushed to the token carol holds now: %v", r.APS["alert"])
		}
	}
}

// bob removes the phone's registration within the grace period: it is
// not pushed.
func TestPushNotForADeviceUnregisteredDuringTheGrace(t *testing.T) {
	f := startPushFlowGrace(t, 0, changeGrace)
	id := f.send(t, "user/bob/newMessage", "hello")
	if st := api(t, f.n, f.bob, "DELETE", "/user/me/devices/phone", nil, nil); st != 204 {
		t.Fatalf("unregister: %d", st)
	}
	f.outboxEmpty(t)
	if n := f.pushesFor(f.phone, id); n != 0 {
		t.Errorf("a device unregistered during the grace period was pushed %d times", n)
	}
}

// bob deletes his account within the grace period: his devices are no
// longer pushed, at once.
func TestPushNotForAnAccountDeletedDuringTheGrace(t *testing.T) {
	f := startPushFlowGrace(t, 0, changeGrace)
	id := f.send(t, "user/bob/newMessage", "hello")
	if st := api(t, f.n, f.bob, "DELETE", "/user/me", map[string]any{"password": nodetest.Password("bob")}, nil); st != 202 {
		t.Fatalf("delete account: %d", st)
	}
	f.outboxEmpty(t)
	if n := f.pushesFor(f.phone, id); n != 0 {
		t.Errorf("a deleted account's device was pushed %d times", n)
	}
}
