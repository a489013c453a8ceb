package node_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/edgechat/edgechat/node/nodetest"
)

// Clients connected to a node that left its cluster (`edgechat cluster
// leave`, answered 200) are told to move on (DISCONNECT 0x89, as for a
// node that must make its clients sync), and a new connection to it is
// refused (0x88): it no longer gets the log, so a client that stayed, or
// came, would miss every message sent to it without a word. Before, alice
// stayed connected to n3 and got nothing of bob's message.
func TestClientsOfANodeThatLeftAreToldToMoveOn(t *testing.T) {
	nodes := nodetest.StartCluster(t, 3)
	n1, n3 := nodes[0], nodes[2]
	root := n1.NewUser(t, "root")
	aliceTok, bobTok := n1.NewUser(t, "alice"), n1.NewUser(t, "bob")
	alice := mustConnectV5(t, n3.MQTTURL, "alice", "phone", aliceTok)
	alice.Sub(t, "user/alice/#")
	bob := mustConnectV5(t, n1.MQTTURL, "bob", "phone", bobTok)

	if st := api(t, n3, root, "POST", "/cluster/leave", nil, nil); st != 200 {
		t.Fatalf("leave of n3: %d, want 200", st)
	}
	if code, _ := bob.Pub(t, "user/alice/newMessage", 1, textMsg("after-leave", "hello")); code != 0 {
		t.Fatalf("bob's publish on n1: %#x", code)
	}
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if reason, ok := alice.ServerDisconnect(); ok {
			if reason != 0x89 {
				return fmt.Errorf("alice was disconnected from n3 with %#x, want 0x89 (reconnect and sync)", reason)
			}
			return nil
		}
		return fmt.Errorf("alice is still connected to n3, which left the cluster, and got %d messages (bob's went to n1)",
			len(alice.Received("user/alice/newMessage")))
	})
	if code := connack(t, n3.MQTTURL, "alice/tablet", "alice", aliceTok); code != 0x88 {
		t.Errorf("a new connection to n3, which left: CONNACK %#x, want 0x88 server unavailable", code)
	}
	// Reconnected elsewhere, alice syncs bob's message.
	var got []string
	for _, e := range syncAll(t, n1, aliceTok) {
		got = append(got, e.Body)
	}
	if len(got) != 1 || got[0] != "hello" {
		t.Errorf("alice's sync on n1: %q, want [hello]", got)
	}
}
