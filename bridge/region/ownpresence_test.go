package region_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgechat/edgechat/node/nodetest"
)

// GET /presence/alice@eu asked in eu, alice's own region, names the
// local user alice (name@{this region} is the local name,
// docs/regions.md) and answers as GET /presence/alice: it answered 403,
// the qualified name being taken for a user of another region that the
// caller may not watch, even when alice asked about herself.
func TestPresenceQualifiedWithOwnRegion(t *testing.T) {
	eu, _ := startRegions(t, 1, "eu", "us", nil)
	aliceTok, carolTok := eu.newUser(t, "alice"), eu.newUser(t, "carol")
	if code := call(t, eu.nodes[0], aliceTok, "POST", "/user/me/contacts", map[string]string{"uid": "carol"}, nil); code != http.StatusCreated {
		t.Fatalf("contact carol: %d", code)
	}
	for _, c := range []struct{ who, tok string }{{"alice", aliceTok}, {"carol", carolTok}} {
		nodetest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
			var plain, qualified struct {
				Status string `json:"status"`
			}
			if code := call(t, eu.nodes[0], c.tok, "GET", "/presence/alice", nil, &plain); code != http.StatusOK {
				return fmt.Errorf("%s: GET /presence/alice: %d, want 200", c.who, code)
			}
			if code := call(t, eu.nodes[0], c.tok, "GET", "/presence/alice@eu", nil, &qualified); code != http.StatusOK || qualified != plain {
				return fmt.Errorf("%s: GET /presence/alice@eu: %d %+v, want 200 %+v as GET /presence/alice", c.who, code, qualified, plain)
			}
			return nil
		})
	}
}

// Over MQTT, presence/alice@eu on eu (alice's own region, qualified
// with its name) cannot be served as presence/alice: the server
// publishes presence on presence/alice only, and mochi delivers a
// publish under its own topic name, so a subscription to another name
// would get nothing. It is refused (0x87) for everyone, alice included,
// with a reason string that says which topic to subscribe to instead
// (it was refused with no reason, like a presence one may not see);
// presence/alice is granted.
func TestPresenceSubscriptionQualifiedWithOwnRegion(t *testing.T) {
	eu, _ := startRegions(t, 1, "eu", "us", nil)
	aliceTok, carolTok := eu.newUser(t, "alice"), eu.newUser(t, "carol")
	if code := call(t, eu.nodes[0], aliceTok, "POST", "/user/me/contacts", map[string]string{"uid": "carol"}, nil); code != http.StatusCreated {
		t.Fatalf("contact carol: %d", code)
	}
	for _, c := range []struct{ who, tok string }{{"alice", aliceTok}, {"carol", carolTok}} {
		cl := connect(t, eu.nodes[0], c.who, "phone", c.tok)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		sa, err := cl.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "presence/alice@eu", QoS: 1}}})
		cancel()
		if sa == nil {
			t.Fatalf("%s: subscribe: %v", c.who, err)
		}
		var reason string
		if sa.Properties != nil {
			reason = sa.Properties.ReasonString
		}
		if len(sa.Reasons) != 1 || sa.Reasons[0] != 0x87 || !strings.Contains(reason, "subscribe to presence/alice") {
			t.Errorf("%s: presence/alice@eu on eu: SUBACK %x %q, want 0x87 saying to subscribe to presence/alice", c.who, sa.Reasons, reason)
		}
		cl.MustSub(t, "presence/alice")
	}
}
