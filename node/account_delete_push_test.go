package node_test

import (
	"errors"
	"testing"
	"time"

	"github.com/edgechat/edgechat/bridge/push/pushtest"
	"github.com/edgechat/edgechat/node/nodetest"
)

// During the grace period a deleted account's devices are not pushed,
// though its data (the registration) is still there.
func TestDeletedAccountIsNotPushedDuringGrace(t *testing.T) {
	f := startPushFlow(t, 0) // bob's phone is registered; the grace period is the default week
	carol := f.n.NewUser(t, "carol")
	carolPhone := pushtest.NewDeviceToken()
	if st := api(t, f.n, carol, "POST", "/user/me/devices", map[string]any{"device": "phone", "platform": "apns", "token": carolPhone}, nil); st != 200 {
		t.Fatalf("carol's phone: %d", st)
	}
	g := createGroup(t, f.n, f.alice, "team", "bob", "carol")
	if st := api(t, f.n, f.bob, "DELETE", "/user/me", map[string]string{"password": nodetest.Password("bob")}, nil); st != 202 {
		t.Fatalf("delete: %d", st)
	}
	id := f.send(t, "group/"+g.GroupID+"/newMessage", "@bob are you there?")
	checkFor(t, 15*time.Second, 20*time.Millisecond, func() error {
		if f.pushesFor(carolPhone, id) == 0 {
			return errors.New("carol not pushed yet")
		}
		return nil
	})
	f.outboxEmpty(t)
	if n := f.pushesFor(f.phone, id); n != 0 {
		t.Fatalf("the deleted account's phone got %d pushes", n)
	}
}
