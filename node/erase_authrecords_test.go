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

// The erasure of an account takes what the auth service recorded of its
// life too: when the user signed out everywhere (a password change, a
// sign-out everywhere, a suspension signs the user out), that an admin
// suspended it, that it lost the admin role. They stayed under
// r/auth/signedout/, r/auth/suspended/ and r/auth/demoted/ for good,
// keys naming the user that no list of what stays mentions.
func TestErasureTakesTheAccountsSignOutSuspensionAndDemotionRecords(t *testing.T) {
	n := nodetest.StartNode(t, nodetest.WithConfig(func(c *node.Config) {
		c.AccountDeleteGrace = 0
		c.FeatureLevelEvery = 100 * time.Millisecond
	}))
	rootTok := n.NewUser(t, "root") // the first account: an admin
	bobTok := n.NewUser(t, "bob")
	waitFeatureLevel(t, []*nodetest.Node{n}, rootTok, featurelevel.Supported)
	if st := api(t, n, bobTok, http.MethodPost, "/auth/logout-all", map[string]string{}, nil); st != http.StatusOK {
		t.Fatalf("bob signs out everywhere: %d", st)
	}
	for _, on := range []bool{true, false} {
		if st := api(t, n, rootTok, http.MethodPut, "/admin/users/bob/admin", map[string]bool{"admin": on}, nil); st != http.StatusOK {
			t.Fatalf("admin=%v: %d", on, st)
		}
	}
	if st := api(t, n, rootTok, http.MethodPut, "/admin/users/bob/suspended", map[string]bool{"suspended": true}, nil); st != http.StatusOK {
		t.Fatalf("suspend bob: %d", st)
	}
	named := map[string]bool{}
	for _, k := range erasedKeys(t, n, "bob") {
		named[k] = true
	}
	for _, k := range []string{"r/auth/signedout/bob", "r/auth/suspended/bob", "r/auth/demoted/bob"} {
		if !named[k] {
			t.Fatalf("no %s before the deletion: %v", k, named)
		}
	}
	if st := api(t, n, rootTok, http.MethodDelete, "/admin/users/bob", nil, nil); st != http.StatusAccepted {
		t.Fatalf("an admin deletes the suspended bob: %d", st)
	}
	checkFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		if left := erasedKeys(t, n, "bob"); len(left) > 0 {
			return fmt.Errorf("%d keys still name bob after the erasure: %v", len(left), left)
		}
		return nil
	})
	if n.Auth.Suspended("bob") {
		t.Error("the node still holds the erased bob as suspended")
	}
	if st := api(t, n, bobTok, http.MethodGet, "/user/me", nil, nil); st != http.StatusUnauthorized {
		t.Errorf("bob's token after the erasure: %d", st)
	}
}
