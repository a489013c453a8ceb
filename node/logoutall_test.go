package node_test

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/testutil/mqtttest"
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
	alicesPhone, _, err := mqtttest.Dial(t, leader.MQTTURL, mqtttest.Options{ClientID: "alice/phone", Username: "alice", Password: phone.AccessToken})
	if err != nil {
		t.Fatal(err)
	}

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
	// Not only at the next refresh: alice's access tokens are refused now
	// on both nodes, her MQTT session was closed and cannot come back with
	// its token; bob's token works; a new sign-in works.
	for _, n := range nodes {
		for name, tk := range map[string]tokens{"phone": phone, "laptop": laptop} {
			if st := api(t, n, tk.AccessToken, http.MethodGet, "/user/me", nil, nil); st != http.StatusUnauthorized {
				t.Fatalf("alice's %s access token on %s after logout-all: %d", name, n.HTTPURL, st)
			}
		}
		if st := api(t, n, bobs.AccessToken, http.MethodGet, "/user/me", nil, nil); st != http.StatusOK {
			t.Fatalf("bob's access token on %s: %d", n.HTTPURL, st)
		}
	}
	nodetest.CheckFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		if _, ok := alicesPhone.ServerDisconnect(); !ok {
			return fmt.Errorf("alice's MQTT session is still open")
		}
		return nil
	})
	if _, _, err := mqtttest.Dial(t, follower.MQTTURL, mqtttest.Options{ClientID: "alice/phone", Username: "alice", Password: phone.AccessToken}); err == nil {
		t.Fatal("alice reconnected with an access token issued before she signed out everywhere")
	}
	fresh := login(follower, "alice")
	if st := api(t, leader, fresh.AccessToken, http.MethodGet, "/user/me", nil, nil); st != http.StatusOK {
		t.Fatalf("a new sign-in after logout-all: %d", st)
	}
}
