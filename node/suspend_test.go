package node_test

import (
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/testutil/mqtttest"
	"github.com/edgechat/edgechat/node/nodetest"
)

// An admin suspends an account on a real two-node cluster, through the
// follower: the user's MQTT session on the leader closes, both nodes
// refuse the user's tokens and the password (403 account_suspended),
// and after the suspension is lifted the user signs in on both.
func TestSuspendAccountOnACluster(t *testing.T) {
	nodes := nodetest.StartCluster(t, 2)
	leader, follower := nodes[0], nodes[1]
	rootToken := leader.NewUser(t, "root") // the first account: an admin
	mallorysToken := leader.NewUser(t, "mallory")
	conn, _, err := mqtttest.Dial(t, leader.MQTTURL, mqtttest.Options{ClientID: "mallory/phone", Username: "mallory", Password: mallorysToken})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Millisecond) // the suspension's sign-out follows the sign-in's millisecond
	suspend := func(on bool) {
		t.Helper()
		if st := api(t, follower, rootToken, http.MethodPut, "/admin/users/mallory/suspended", map[string]bool{"suspended": on}, nil); st != http.StatusOK {
			t.Fatalf("suspended=%v: %d", on, st)
		}
	}
	suspend(true)
	nodetest.CheckFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		if _, ok := conn.ServerDisconnect(); !ok {
			return errors.New("mallory's MQTT session is still open")
		}
		return nil
	})
	login := func(n *nodetest.Node) (int, string) {
		var e struct{ Error struct{ Code string } }
		st := api(t, n, "", http.MethodPost, "/auth/login", map[string]string{"username": "mallory", "password": nodetest.Password("mallory")}, &e)
		return st, e.Error.Code
	}
	for _, n := range nodes {
		if st := api(t, n, mallorysToken, http.MethodGet, "/user/me", nil, nil); st != http.StatusUnauthorized {
			t.Fatalf("mallory's token on %s while suspended: %d", n.HTTPURL, st)
		}
		if st, code := login(n); st != http.StatusForbidden || code != "account_suspended" {
			t.Fatalf("mallory's login on %s while suspended: %d %q", n.HTTPURL, st, code)
		}
	}
	suspend(false)
	for _, n := range nodes {
		if st, _ := login(n); st != http.StatusOK {
			t.Fatalf("mallory's login on %s after the suspension: %d", n.HTTPURL, st)
		}
	}
}
