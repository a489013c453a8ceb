package main

import (
	"encoding/json"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgechat/edgechat/internal/testutil/mqtttest"
)

// A message acknowledged by a node that is then killed still reaches a
// recipient connected to another node live, without a reconnection or a
// sync: the recipient's node delivers it from its own copy of the log.
// (Until the twenty-second session the sending node delivered it and
// forwarded it to the others: a message it acknowledged just before
// SIGKILL reached the others' subscribers only at their next sync.) The
// sender's node is the leader, so its death also takes a failover.
func TestLiveDeliveryOutlivesTheSendersNodeSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three real processes")
	}
	c := startCluster3(t)
	tokens := c.addUsers("a long password", "alice", "bob")
	lead, err := c.leader()
	if err != nil {
		t.Fatal(err)
	}
	recvNode := (lead + 1) % 3
	bob := mqtttest.MustDial(t, c.proc(recvNode).mqtt, v5Options("bob/phone", "bob", tokens["bob"]))
	bob.MustSub(t, "user/bob/newMessage")

	var clients []*paho.Client
	for g := range 8 {
		clients = append(clients, dialV5(t, c.proc(lead).mqtt, fmt.Sprintf("alice/load%d", g), "alice", tokens["alice"]))
	}
	load := startKillLoad(t, clients, 1, "bob")
	checkFor(t, 30*time.Second, 10*time.Millisecond, func() error {
		if n := len(load.ackedSoFar()); n < 400 {
			return fmt.Errorf("%d acknowledged", n)
		}
		return nil
	})
	want := load.kill(func() { c.proc(lead).stop(t, syscall.SIGKILL) })
	got := map[string]bool{}
	checkFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		for _, m := range bob.Received("user/bob/newMessage") {
			var env struct{ CID string }
			if err := json.Unmarshal(m.Payload, &env); err != nil {
				t.Fatalf("delivery %q: %v", m.Payload, err)
			}
			got[env.CID] = true
		}
		missing := 0
		for _, cid := range want {
			if !got[cid] {
				missing++
			}
		}
		if missing > 0 {
			return fmt.Errorf("bob, connected to n%d all along, has not received %d of the %d messages n%d acknowledged before SIGKILL", recvNode+1, missing, len(want), lead+1)
		}
		return nil
	})
	t.Logf("%d acknowledged before SIGKILL, all delivered live on n%d", len(want), recvNode+1)
}
