package node_test

import (
	"testing"

	"github.com/edgechat/edgechat/node/nodetest"
)

// An admin whose role is revoked loses it at once, not when their access
// token expires: before, the token they held (15 minutes by default)
// still reached every admin endpoint, so a rogue admin an operator
// demoted could grant themselves the role back, or demote the operator,
// with it.
func TestRevokedAdminLosesTheRoleAtOnce(t *testing.T) {
	n := nodetest.StartNode(t)
	ada := n.NewUser(t, "ada") // the first account: an admin
	n.NewUser(t, "bob")
	if st := api(t, n, ada, "PUT", "/admin/users/bob/admin", map[string]bool{"admin": true}, nil); st != 200 {
		t.Fatalf("grant bob: %d", st)
	}
	bob := n.Token(t, "bob") // carries the admin role
	if st := api(t, n, bob, "GET", "/admin/stats", nil, nil); st != 200 {
		t.Fatalf("bob as an admin: %d", st)
	}
	if st := api(t, n, ada, "PUT", "/admin/users/bob/admin", map[string]bool{"admin": false}, nil); st != 200 {
		t.Fatalf("revoke bob: %d", st)
	}
	if st := api(t, n, bob, "GET", "/admin/stats", nil, nil); st != 403 {
		t.Fatalf("bob's token of before the revocation still reaches /admin/stats: %d", st)
	}
	if st := api(t, n, bob, "PUT", "/admin/users/bob/admin", map[string]bool{"admin": true}, nil); st != 403 {
		t.Fatalf("bob granted himself the role back with his old token: %d", st)
	}
	// He is still signed in as a user.
	if st := api(t, n, bob, "GET", "/user/me", nil, nil); st != 200 {
		t.Fatalf("bob's token as a user: %d", st)
	}
	// Granted again, a new token is an admin's again; so is the token
	// an admin asks for the operator (no account: its claim stands).
	if st := api(t, n, ada, "PUT", "/admin/users/bob/admin", map[string]bool{"admin": true}, nil); st != 200 {
		t.Fatalf("grant bob again: %d", st)
	}
	if st := api(t, n, n.Token(t, "bob"), "GET", "/admin/stats", nil, nil); st != 200 {
		t.Fatalf("bob granted again: %d", st)
	}
	op, err := n.Auth.MintAccessToken("operator", true)
	if err != nil {
		t.Fatal(err)
	}
	if st := api(t, n, op, "GET", "/admin/stats", nil, nil); st != 200 {
		t.Fatalf("an operator token: %d", st)
	}
}
