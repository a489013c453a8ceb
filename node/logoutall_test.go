package node_test

import (
	"net/http"
	"testing"

	"github.com/edgechat/edgechat/node/nodetest"
)

// Sign out everywhere on a real two-node cluster, asked of the follower
// (the command is forwarded to the leader): every session of the user
// ends at its next refresh on either node, another user's goes on, and
// the endpoint wants an access token.
func TestLogoutAllOnACluster(t *testing.T) {
	nodes := nodetest.StartCluster(t, 2)
	leader, follower := nodes[0], nodes[1]
	follower.NewUser(t, "alice")
	follower.NewUser(t, "bob")
	type tokens struct {
		AccessToken  string `json:"accessToken"`
		RefreshToken string `json:"refreshToken"`
	}
	login := func(n *nodetest.Node, user string) tokens {
		t.Helper()
		var tk tokens
		if st := api(t, n, "", http.MethodPost, "/auth/login", map[string]string{"username": user, "password": nodetest.Password(user)}, &tk); st != http.StatusOK {
			t.Fatalf("login %s: %d", user, st)
		}
		return tk
	}
	phone, laptop, bobs := login(leader, "alice"), login(follower, "alice"), login(leader, "bob")

	if st := api(t, follower, "", http.MethodPost, "/auth/logout-all", map[string]string{}, nil); st != http.StatusUnauthorized {
		t.Fatalf("logout-all without a token: %d", st)
	}
	var got struct{ Revoked int }
	if st := api(t, follower, laptop.AccessToken, http.MethodPost, "/auth/logout-all", map[string]string{}, &got); st != http.StatusOK || got.Revoked < 2 {
		t.Fatalf("logout-all: %d, revoked %d", st, got.Revoked)
	}
	// Either node: a rotation is decided in log order, after the revocation.
	for _, n := range nodes {
		for name, tk := range map[string]tokens{"phone": phone, "laptop": laptop} {
			var e struct{ Error struct{ Code string } }
			if st := api(t, n, "", http.MethodPost, "/auth/refresh", map[string]string{"refreshToken": tk.RefreshToken}, &e); st != http.StatusUnauthorized || e.Error.Code != "invalid_refresh_token" {
				t.Fatalf("refresh of alice's %s session on %s after logout-all: %d %q", name, n.HTTPURL, st, e.Error.Code)
			}
		}
	}
	if st := api(t, leader, "", http.MethodPost, "/auth/refresh", map[string]string{"refreshToken": bobs.RefreshToken}, nil); st != http.StatusOK {
		t.Fatalf("bob's session after alice's logout-all: %d", st)
	}
}
