package node_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgechat/edgechat/cluster"
	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
)

// A follower left so far behind that the leader sends it a snapshot
// applies none of the messages in it one by one, so it delivers none of
// them live: it closes its signed-in connections (0x89) once it has
// loaded the snapshot, and a client that reconnects and syncs gets them.
// Here the follower's apply is held until its Raft loop stops taking
// entries, and the leader compacts its log past it meanwhile.
func TestAFollowerCaughtUpFromASnapshotMakesItsClientsSync(t *testing.T) {
	small := nodetest.WithConfig(func(c *node.Config) {
		c.RaftTuning = func(rc *cluster.Config) {
			rc.TrailingLogs = 4
			rc.SnapshotThreshold = 1 << 20 // only the snapshot taken below
			rc.LogSegmentSize = 4096       // small segments, so that compaction frees some
		}
	})
	nodes := nodetest.StartCluster(t, 3, small)
	var leader, behind *nodetest.Node
	for _, n := range nodes {
		switch {
		case n.IsLeader():
			leader = n
		case behind == nil:
			behind = n
		}
	}
	if leader == nil || behind == nil {
		t.Fatal("no leader")
	}
	aliceTok, bobTok := leader.NewUser(t, "alice"), leader.NewUser(t, "bob")
	bob := mustConnectV5(t, behind.MQTTURL, "bob", "phone", bobTok)
	bob.MustSub(t, "user/bob/newMessage")

	release := node.HoldApply(behind.Node)
	defer release()
	alice := mustConnectV5(t, leader.MQTTURL, "alice", "phone", aliceTok)
	const total = 400 // one entry each: more than the held follower's Raft loop queues
	for i := range total {
		if code, _ := alice.Pub(t, "user/bob/newMessage", 1, textMsg(fmt.Sprintf("m%d", i), "hello")); code != 0 {
			t.Fatalf("message %d: %#x", i, code)
		}
	}
	if err := node.Snapshot(context.Background(), leader.Node); err != nil {
		t.Fatal(err)
	}
	release()

	nodetest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		if code, ok := bob.ServerDisconnect(); ok {
			if code != packets.ErrServerBusy.Code {
				return fmt.Errorf("bob disconnected with %#x, want 0x89", code)
			}
			return nil
		}
		if got := len(bob.Received("user/bob/newMessage")); got == total {
			return nil // every one delivered live: no snapshot was needed after all
		}
		return errors.New("bob neither got every message live nor was told to sync")
	})
	if _, ok := bob.ServerDisconnect(); !ok {
		t.Fatal("the follower was not sent a snapshot: the test did not reach its case")
	}
	// Reconnect and sync: everything is there.
	bob2 := mustConnectV5(t, behind.MQTTURL, "bob", "phone", bobTok)
	bob2.MustSub(t, "user/bob/newMessage")
	seen := map[string]bool{}
	for _, m := range syncAll(t, behind, bobTok) {
		seen[m.CID] = true
	}
	if len(seen) != total {
		t.Fatalf("bob's sync after the resync has %d of %d messages", len(seen), total)
	}
}
