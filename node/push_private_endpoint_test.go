package node_test

import (
	"errors"
	"testing"
	"time"

	"github.com/edgechat/edgechat/bridge/push/pushtest"
	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
)

// A node that does not allow private push endpoints (the default) never
// posts to a Web Push subscription on its own network, whoever
// registered it, and drops the registration as dead.
func TestPushWebEndpointOnThePrivateNetworkIsNeverPosted(t *testing.T) {
	opt, _ := withPushMocks(t)
	n := nodetest.StartNode(t, opt, nodetest.WithConfig(func(c *node.Config) {
		c.PushGrace = 0
		c.PushPrivateEndpoints = false // as in production
	}))
	alice, bob := n.NewUser(t, "alice"), n.NewUser(t, "bob")
	var vapid string
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if vapid = vapidKey(t, n); vapid == "" {
			return errors.New("no VAPID key yet")
		}
		return nil
	})
	internal := pushtest.StartWebPush(t, vapid) // "an internal service" on 127.0.0.1
	sub := internal.Subscribe()
	if st := api(t, n, bob, "POST", "/user/me/devices", map[string]any{"device": "browser", "platform": "webpush",
		"subscription": map[string]any{"endpoint": sub.Endpoint, "keys": map[string]string{"p256dh": sub.P256dh, "auth": sub.Auth}}}, nil); st != 200 {
		t.Fatalf("register: %d", st)
	}
	if st := api(t, n, alice, "POST", "/chat/messages", map[string]any{"to": "bob", "cid": "c1", "type": "text", "body": "hi"}, nil); st != 200 && st != 201 {
		t.Fatalf("send: %d", st)
	}
	checkFor(t, 15*time.Second, 20*time.Millisecond, func() error {
		var list deviceList
		if st := api(t, n, bob, "GET", "/user/me/devices", nil, &list); st != 200 {
			return errors.New("list")
		}
		if len(list.Devices) != 0 {
			return errors.New("the registration of a private endpoint is still there")
		}
		return nil
	})
	if r := internal.Requests(); len(r) != 0 {
		t.Fatalf("the node posted %d times into its own network", len(r))
	}
}
