package node_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgechat/edgechat/internal/testutil/mqtttest"
	"github.com/edgechat/edgechat/node/nodetest"
)

// A node cut off from its cluster (the others, a quorum, go on without
// it) closes its signed-in clients' connections with DISCONNECT 0x89
// once it counts itself down (--node-down-after without a leader), and
// refuses their CONNECTs with 0x88 while it is, so that they move to a
// node that gets the log; a client that only receives was told nothing
// before and got nothing for as long as the partition lasted. Healed,
// it takes them again. n3 is reached through a proxy that is cut.
func TestANodeCutOffSendsItsClientsElsewhere(t *testing.T) {
	nodes := nodetest.StartCluster(t, 2)
	n1 := nodes[0]
	aliceTok := n1.NewUser(t, "alice")

	n3, proxy, logs := joinBehindProxy(t, n1)
	addr := "tcp://" + n3.MQTTAddr()
	alice := mustConnectV5(t, addr, "alice", "phone", aliceTok)
	alice.Sub(t, "user/alice/#")

	proxy.SetCut(true)
	checkFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		if reason, ok := alice.ServerDisconnect(); !ok || reason != 0x89 {
			return errors.New("alice (receiving only) is still connected to n3, cut off from its cluster")
		}
		return nil
	})
	if reason := alice.ServerDisconnectReason(); !strings.Contains(reason, "cut off from its cluster") {
		t.Errorf("DISCONNECT 0x89 from n3, cut off: reason string %q, want it to say so", reason)
	}
	c, ca, err := mqtttest.Open(addr, mqtttest.Options{ClientID: "alice/tablet", Username: "alice", Password: aliceTok})
	if err == nil {
		_ = c.Disconnect(&paho.Disconnect{})
		t.Fatal("n3, cut off, took a new connection of alice's")
	}
	if ca == nil || ca.ReasonCode != 0x88 || !strings.Contains(ca.Properties.ReasonString, "cut off") {
		t.Fatalf("CONNECT to n3 while it is cut off: %+v %v, want CONNACK 0x88 saying it is cut off", ca, err)
	}
	if !strings.Contains(logs.String(), "cut off from the cluster: closed the signed-in connections") {
		t.Errorf("n3's log does not say it closed its clients' connections:\n%s", logs.String())
	}

	proxy.SetCut(false)
	checkFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		c, ca, err := mqtttest.Open(addr, mqtttest.Options{ClientID: "alice/phone", Username: "alice", Password: aliceTok})
		if err != nil {
			return fmt.Errorf("CONNECT to n3 after the heal: %+v %v", ca, err)
		}
		_ = c.Disconnect(&paho.Disconnect{})
		return nil
	})
}
