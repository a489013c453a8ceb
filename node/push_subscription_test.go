package node_test

import (
	"testing"

	"github.com/edgechat/edgechat/node/nodetest"
)

// The web app registers what the browser's PushSubscription.toJSON()
// gives, as docs/protocol.md says to: {endpoint, expirationTime, keys},
// expirationTime null (or, from a push service whose subscriptions
// expire, a time in milliseconds).
func TestPushRegistersTheBrowsersSubscriptionAsItIs(t *testing.T) {
	n := nodetest.StartNode(t, withPush(t))
	tok := n.NewUser(t, "alice")
	for i, exp := range []any{nil, 1900000000000} {
		sub := webSubscription(t, "https://push.example.com/ep/"+string(rune('a'+i)))
		sub["expirationTime"] = exp
		var errBody struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		if st := api(t, n, tok, "POST", "/user/me/devices",
			map[string]any{"device": "browser-" + string(rune('a'+i)), "platform": "webpush", "subscription": sub}, &errBody); st != 200 {
			t.Errorf("register a subscription with expirationTime %v: %d %+v", exp, st, errBody.Error)
		}
	}
	var list deviceList
	if st := api(t, n, tok, "GET", "/user/me/devices", nil, &list); st != 200 || len(list.Devices) != 2 {
		t.Errorf("devices: %d %+v", st, list)
	}
}
