package node_test

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/testutil/mqtttest"
	"github.com/edgechat/edgechat/node/nodetest"
)

// A password change on a real two-node cluster, asked of the follower:
// the old password and every earlier session end on both nodes (the
// live MQTT session on the leader closes), the new password and the
// caller's new tokens work on both. Then an admin resets it through the
// leader, with the same effect.
func TestPasswordChangeOnACluster(t *testing.T) {
	nodes := nodetest.StartCluster(t, 2)
	leader, follower := nodes[0], nodes[1]
	rootToken := leader.NewUser(t, "root") // the first account: an admin
	follower.NewUser(t, "alice")
	type tokens struct {
		AccessToken  string `json:"accessToken"`
		RefreshToken string `json:"refreshToken"`
		Revoked      int    `json:"revoked"`
	}
	login := func(n *nodetest.Node, user, password string) (tokens, int) {
		t.Helper()
		var tk tokens
		st := api(t, n, "", http.MethodPost, "/auth/login", map[string]string{"username": user, "password": password}, &tk)
		return tk, st
	}
	phone, _ := login(leader, "alice", nodetest.Password("alice"))
	laptop, _ := login(follower, "alice", nodetest.Password("alice"))
	alicesPhone, _, err := mqtttest.Dial(t, leader.MQTTURL, mqtttest.Options{ClientID: "alice/phone", Username: "alice", Password: phone.AccessToken})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Millisecond) // the change's sign-out time must follow those sign-ins' millisecond

	var e struct{ Error struct{ Code string } }
	if st := api(t, follower, laptop.AccessToken, http.MethodPost, "/auth/password",
		map[string]string{"currentPassword": "not-her-password", "newPassword": "new-password-1"}, &e); st != http.StatusForbidden || e.Error.Code != "forbidden" {
		t.Fatalf("change with a wrong current password: %d %q", st, e.Error.Code)
	}
	var changed tokens
	if st := api(t, follower, laptop.AccessToken, http.MethodPost, "/auth/password",
		map[string]string{"currentPassword": nodetest.Password("alice"), "newPassword": "new-password-1"}, &changed); st != http.StatusOK || changed.Revoked < 2 {
		t.Fatalf("change: %d, revoked %d", st, changed.Revoked)
	}
	nodetest.CheckFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		if _, ok := alicesPhone.ServerDisconnect(); !ok {
			return fmt.Errorf("alice's MQTT session on the leader is still open")
		}
		return nil
	})
	for _, n := range nodes {
		for name, tk := range map[string]tokens{"phone": phone, "laptop": laptop} {
			if st := api(t, n, tk.AccessToken, http.MethodGet, "/user/me", nil, nil); st != http.StatusUnauthorized {
				t.Fatalf("alice's %s access token on %s after the change: %d", name, n.HTTPURL, st)
			}
			if st := api(t, n, "", http.MethodPost, "/auth/refresh", map[string]string{"refreshToken": tk.RefreshToken}, nil); st != http.StatusUnauthorized {
				t.Fatalf("alice's %s refresh token on %s after the change: %d", name, n.HTTPURL, st)
			}
		}
		if _, st := login(n, "alice", nodetest.Password("alice")); st != http.StatusUnauthorized {
			t.Fatalf("the old password on %s: %d", n.HTTPURL, st)
		}
		if _, st := login(n, "alice", "new-password-1"); st != http.StatusOK {
			t.Fatalf("the new password on %s: %d", n.HTTPURL, st)
		}
		if st := api(t, n, changed.AccessToken, http.MethodGet, "/user/me", nil, nil); st != http.StatusOK {
			t.Fatalf("the change's access token on %s: %d", n.HTTPURL, st)
		}
	}
	if _, _, err := mqtttest.Dial(t, follower.MQTTURL, mqtttest.Options{ClientID: "alice/phone", Username: "alice", Password: phone.AccessToken}); err == nil {
		t.Fatal("alice's phone reconnected with an access token issued before the change")
	}
	if _, _, err := mqtttest.Dial(t, leader.MQTTURL, mqtttest.Options{ClientID: "alice/laptop", Username: "alice", Password: changed.AccessToken}); err != nil {
		t.Fatalf("MQTT with the change's access token: %v", err)
	}

	// An admin's reset.
	time.Sleep(5 * time.Millisecond)
	if st := api(t, leader, changed.AccessToken, http.MethodPut, "/admin/users/alice/password", map[string]string{"password": "new-password-2"}, nil); st != http.StatusForbidden {
		t.Fatalf("a reset by a user who is not an admin: %d", st)
	}
	var reset struct {
		UserID  string `json:"userId"`
		Revoked int    `json:"revoked"`
	}
	if st := api(t, leader, rootToken, http.MethodPut, "/admin/users/alice/password", map[string]string{"password": "new-password-2"}, &reset); st != http.StatusOK || reset.UserID != "alice" || reset.Revoked < 1 {
		t.Fatalf("reset: %d %+v", st, reset)
	}
	// The leader answered once it applied the reset; a follower refuses
	// once it has applied it too, a moment later (CI saw a follower
	// accept the token right after the leader's answer).
	for _, n := range nodes {
		nodetest.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
			if st := api(t, n, changed.AccessToken, http.MethodGet, "/user/me", nil, nil); st != http.StatusUnauthorized {
				return fmt.Errorf("the change's access token on %s after the reset: %d", n.HTTPURL, st)
			}
			return nil
		})
		if _, st := login(n, "alice", "new-password-1"); st != http.StatusUnauthorized {
			t.Fatalf("the replaced password on %s: %d", n.HTTPURL, st)
		}
		if _, st := login(n, "alice", "new-password-2"); st != http.StatusOK {
			t.Fatalf("the reset password on %s: %d", n.HTTPURL, st)
		}
	}
}
