package node_test

import (
	"testing"

	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
)

// GET /user/{name}@{this region} answers the local user's profile, as
// GET /user/{name} does (7f4acaf), so it marks an account deleted and
// waiting for its erasure "deleted": true too: the web client asks the
// name as typed, qualified or not, before it opens a chat.
func TestQualifiedProfileOfThisRegionMarksADeletedAccount(t *testing.T) {
	n := nodetest.StartNode(t, nodetest.WithConfig(func(c *node.Config) { c.Region, c.RegionNumber = "eu", 1 }))
	aliceTok, bobTok := n.NewUser(t, "alice"), n.NewUser(t, "bob")
	if st := api(t, n, bobTok, "DELETE", "/user/me", map[string]string{"password": nodetest.Password("bob")}, nil); st != 202 {
		t.Fatalf("delete: %d", st)
	}
	for _, path := range []string{"/user/bob", "/user/bob@eu"} {
		var p profileView
		if st := api(t, n, aliceTok, "GET", path, nil, &p); st != 200 || p.UserID != "bob" || !p.Deleted {
			t.Errorf("GET %s: %d %+v, want bob marked deleted", path, st, p)
		}
	}
}
