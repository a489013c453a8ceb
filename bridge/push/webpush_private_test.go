package push_test

import (
	"strings"
	"testing"

	"github.com/edgechat/edgechat/bridge/push"
	"github.com/edgechat/edgechat/bridge/push/pushtest"
)

// A Web Push subscription is whatever https URL a signed-in user
// registers, and the leader POSTs to it for each message: an endpoint on
// the node's own network (loopback, private, link-local: a metadata
// service, an internal API) made the node a blind request forwarder into
// it, and the registration's removal on a 404 or 410 told the user
// whether such a URL exists there. Such an endpoint is never posted to
// and its registration goes as dead, whether the URL names the address
// or a host name that resolves to one; a provider configured to allow
// them (tests, a closed network with its own push service) posts.
func TestWebPushRefusesEndpointsOnPrivateAddresses(t *testing.T) {
	pub, priv, err := pushtest.NewVAPIDKeys()
	if err != nil {
		t.Fatal(err)
	}
	mock := pushtest.StartWebPush(t, pub) // on 127.0.0.1
	sub := mock.Subscribe()
	p, err := push.NewWebPush(push.WebPushConfig{VAPIDPublicKey: pub, VAPIDPrivateKey: priv,
		Subject: "mailto:ops@example.com", TLSConfig: mock.TLSConfig()})
	if err != nil {
		t.Fatal(err)
	}
	byName := webDevice(sub)
	byName.Endpoint = strings.Replace(byName.Endpoint, "127.0.0.1", "localhost", 1)
	for _, d := range []push.Device{webDevice(sub), byName} {
		res, err := p.Send(t.Context(), d, fullNotification())
		if res.Outcome != push.DeadToken || err == nil {
			t.Errorf("%s: %+v %v, want DeadToken", d.Endpoint, res, err)
		}
	}
	if n := len(mock.Requests()); n != 0 {
		t.Fatalf("the node posted %d times to an endpoint on its own network", n)
	}

	allowed, err := push.NewWebPush(push.WebPushConfig{VAPIDPublicKey: pub, VAPIDPrivateKey: priv,
		Subject: "mailto:ops@example.com", TLSConfig: mock.TLSConfig(), AllowPrivateEndpoints: true})
	if err != nil {
		t.Fatal(err)
	}
	if res, err := allowed.Send(t.Context(), webDevice(sub), fullNotification()); res.Outcome != push.Delivered {
		t.Fatalf("allowed: %+v %v", res, err)
	}
}
