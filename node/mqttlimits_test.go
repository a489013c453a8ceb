package node_test

import (
	"testing"

	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
)

// --mqtt-connections-per-user reaches the broker: a user's connection
// over it is refused 0x97 (a takeover of a connected client ID is not),
// and 0 lifts the limit.
func TestConnectionsPerUserFlag(t *testing.T) {
	n := nodetest.StartNode(t, nodetest.WithConfig(func(c *node.Config) { c.MQTTConnectionsPerUser = 2 }))
	tok := n.NewUser(t, "alice")
	mustConnectV5(t, n.MQTTAddr(), "alice", "phone", tok)
	mustConnectV5(t, n.MQTTAddr(), "alice", "laptop", tok)
	if code := connack(t, n.MQTTAddr(), "alice/tablet", "alice", tok); code != 0x97 {
		t.Fatalf("third device: CONNACK %#x, want 0x97", code)
	}
	if code := connack(t, n.MQTTAddr(), "alice/phone", "alice", tok); code != 0 {
		t.Fatalf("the phone again (a takeover): CONNACK %#x, want 0", code)
	}

	free := nodetest.StartNode(t, nodetest.WithConfig(func(c *node.Config) { c.MQTTConnectionsPerUser = 0 }))
	tok = free.NewUser(t, "bob")
	for _, d := range []string{"a", "b", "c"} {
		mustConnectV5(t, free.MQTTAddr(), "bob", d, tok)
	}
}
