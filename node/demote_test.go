package node_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

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

// A demoted admin's live MQTT connection loses $SYS at once, on every
// node: before, the principal checked at CONNECT kept the admin role for
// the connection's whole life, so its $SYS/# subscription went on
// receiving the broker's statistics (and could be made again) after the
// role was revoked. bob is connected to the follower; the revocation is
// asked of the leader. His chat subscriptions stay.
func TestDemotedAdminsLiveConnectionLosesSys(t *testing.T) {
	nodes := nodetest.StartCluster(t, 2)
	leader, follower := nodes[0], nodes[1]
	ada := leader.NewUser(t, "ada") // the first account: an admin
	leader.NewUser(t, "bob")
	if st := api(t, leader, ada, "PUT", "/admin/users/bob/admin", map[string]bool{"admin": true}, nil); st != 200 {
		t.Fatalf("grant bob: %d", st)
	}
	bob := mustConnectV5(t, follower.MQTTURL, "bob", "console", leader.Token(t, "bob"))
	bob.MustSub(t, "$SYS/#", "user/bob/events")
	srv := follower.Broker.Server()
	// Each probe publishes a $SYS topic, then an event to bob on the same
	// connection: once the event came, bob got the $SYS one or never will.
	i := 0
	publish := func() {
		i++
		if err := srv.Publish(fmt.Sprintf("$SYS/probe/%d", i), []byte("x"), false, 0); err != nil {
			t.Fatal(err)
		}
		if err := srv.Publish("user/bob/events", []byte(fmt.Sprintf(`{"probe":%d}`, i)), false, 0); err != nil {
			t.Fatal(err)
		}
	}
	// sysCame waits for the last probe's event, then tells whether its
	// $SYS topic came; a probe answered the wrong way is followed by
	// another.
	sysCame := func(want bool) error {
		mark := fmt.Sprintf(`{"probe":%d}`, i)
		for _, m := range bob.Received("user/bob/events") {
			if string(m.Payload) == mark {
				if got := len(bob.Received(fmt.Sprintf("$SYS/probe/%d", i))) > 0; got != want {
					publish()
					return fmt.Errorf("probe %d: $SYS update delivered %v, want %v", i-1, got, want)
				}
				return nil
			}
		}
		return errors.New("the probe's event has not come yet")
	}
	publish()
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error { return sysCame(true) })
	if st := api(t, leader, ada, "PUT", "/admin/users/bob/admin", map[string]bool{"admin": false}, nil); st != 200 {
		t.Fatalf("revoke bob: %d", st)
	}
	publish()
	// Before the fix every probe's $SYS topic still came.
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error { return sysCame(false) })
	if r := bob.Sub(t, "$SYS/#"); r[0] < 0x80 {
		t.Fatalf("bob subscribed to $SYS/# again on his live connection after the revocation: %#x", r[0])
	}
	if _, ok := bob.ServerDisconnect(); ok {
		t.Fatal("bob's connection was closed: only $SYS should have gone")
	}
}
