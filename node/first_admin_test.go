package node_test

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/edgechat/edgechat/cluster/featurelevel"
	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
)

// The first account of a cluster is its admin, once: an account made
// after every account was erased is not. A stranger who signed up on a
// server whose only account (its operator's first, an admin) had been
// deleted and erased got the admin role, since the rule counted the
// accounts that exist, not those that ever did.
func TestNoAdminRoleForTheFirstAccountAfterAnErasure(t *testing.T) {
	n := nodetest.StartNode(t, nodetest.WithConfig(func(c *node.Config) {
		c.AccountDeleteGrace = 0
		c.FeatureLevelEvery = 100 * time.Millisecond
	}))
	rootTok := n.NewUser(t, "root")
	waitFeatureLevel(t, []*nodetest.Node{n}, rootTok, featurelevel.Supported)
	if a, err := n.Auth.LookupAccount("root"); err != nil || !a.Admin {
		t.Fatalf("root, the first account: %+v %v, want an admin", a, err)
	}
	if st := api(t, n, rootTok, http.MethodDelete, "/user/me", map[string]string{"password": nodetest.Password("root")}, nil); st != http.StatusAccepted {
		t.Fatalf("root deletes the account: %d", st)
	}
	checkFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		if left := erasedKeys(t, n, "root"); len(left) > 0 {
			return fmt.Errorf("%d keys still name root: %v", len(left), left)
		}
		return nil
	})
	malloryTok := n.NewUser(t, "mallory")
	if a, err := n.Auth.LookupAccount("mallory"); err != nil || a.Admin {
		t.Errorf("mallory, signed up after root's erasure: %+v %v, want no admin role", a, err)
	}
	if st := api(t, n, malloryTok, http.MethodGet, "/admin/stats", nil, nil); st != http.StatusForbidden {
		t.Errorf("mallory's GET /admin/stats: %d, want 403", st)
	}
}
