package region_test

import (
	"fmt"
	"net/http"
	"testing"
	"time"

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
