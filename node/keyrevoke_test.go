package node_test

import (
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/testutil/mqtttest"
	"github.com/edgechat/edgechat/node/nodetest"
)

// Revoking a node's signing key on a real two-node cluster, asked of the
// other node: tokens it signed are refused on both nodes at once, the
// MQTT sessions made with them are closed (a session made with the other
// node's key stays), the node makes itself a new key, and signing in
// through it gives tokens that work on both nodes; refresh tokens are
// not signed, so a client whose access token was refused refreshes.
func TestSigningKeyRevocationOnACluster(t *testing.T) {
	nodes := nodetest.StartCluster(t, 2)
	leader, follower := nodes[0], nodes[1]
	rootToken := follower.NewUser(t, "root") // the first account: an admin (signed by the follower)
	leader.NewUser(t, "alice")
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
	alices, bobs := login(leader, "alice"), login(follower, "bob")
	alice, _, err := mqtttest.Dial(t, follower.MQTTURL, mqtttest.Options{ClientID: "alice/phone", Username: "alice", Password: alices.AccessToken})
	if err != nil {
		t.Fatal(err)
	}
	bob, _, err := mqtttest.Dial(t, follower.MQTTURL, mqtttest.Options{ClientID: "bob/phone", Username: "bob", Password: bobs.AccessToken})
	if err != nil {
		t.Fatal(err)
	}
	var listed struct {
		Keys []struct {
			Kid     string `json:"kid"`
			Current bool   `json:"current"`
		} `json:"keys"`
	}
	if st := api(t, leader, rootToken, http.MethodGet, "/admin/keys", nil, &listed); st != http.StatusOK || len(listed.Keys) < 2 || !listed.Keys[0].Current {
		t.Fatalf("the leader's keys: %d %+v", st, listed)
	}
	leaderKid := listed.Keys[0].Kid

	if st := api(t, follower, alices.AccessToken, http.MethodPost, "/admin/keys/"+leaderKid+"/revoke", nil, nil); st != http.StatusForbidden {
		t.Fatalf("a revocation by a user who is not an admin: %d", st)
	}
	if st := api(t, follower, rootToken, http.MethodPost, "/admin/keys/"+leaderKid+"/revoke", nil, nil); st != http.StatusOK {
		t.Fatalf("revoke: %d", st)
	}
	for _, n := range nodes {
		if st := api(t, n, alices.AccessToken, http.MethodGet, "/user/me", nil, nil); st != http.StatusUnauthorized {
			t.Fatalf("a token of the revoked key on %s: %d", n.HTTPURL, st)
		}
		if st := api(t, n, bobs.AccessToken, http.MethodGet, "/user/me", nil, nil); st != http.StatusOK {
			t.Fatalf("a token of the other key on %s: %d", n.HTTPURL, st)
		}
	}
	nodetest.CheckFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		if _, ok := alice.ServerDisconnect(); !ok {
			return errors.New("the session made with the revoked key is still open")
		}
		return nil
	})
	if _, ok := bob.ServerDisconnect(); ok {
		t.Fatal("the session made with the other key was closed")
	}
	// The leader signs with a new key; a refresh through it gives a token
	// that works everywhere, MQTT included.
	nodetest.CheckFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		if st := api(t, leader, rootToken, http.MethodGet, "/admin/keys", nil, &listed); st != http.StatusOK {
			return fmt.Errorf("keys: %d", st)
		}
		if listed.Keys[0].Kid == leaderKid {
			return errors.New("the leader still signs with its revoked key")
		}
		return nil
	})
	var refreshed tokens
	if st := api(t, leader, "", http.MethodPost, "/auth/refresh", map[string]string{"refreshToken": alices.RefreshToken}, &refreshed); st != http.StatusOK {
		t.Fatalf("alice's refresh after the revocation: %d", st)
	}
	for _, n := range nodes {
		if st := api(t, n, refreshed.AccessToken, http.MethodGet, "/user/me", nil, nil); st != http.StatusOK {
			t.Fatalf("a token of the leader's new key on %s: %d", n.HTTPURL, st)
		}
	}
	if _, _, err := mqtttest.Dial(t, follower.MQTTURL, mqtttest.Options{ClientID: "alice/phone", Username: "alice", Password: refreshed.AccessToken}); err != nil {
		t.Fatalf("MQTT with the new key's token: %v", err)
	}
}
