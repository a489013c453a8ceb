package node_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/edgechat/edgechat/node/nodetest"
)

// A leader stopped gracefully (SIGTERM: a rolling restart, a Kubernetes
// rollout, a systemd stop) hands its leadership to another voter before
// it goes: it shut Raft down as a leader, so the others noticed only
// after an election timeout and elected a new one; for that while (1.3 s
// by hand with the default 500 ms --raft-timeout) nothing committed
// anywhere and the followers' /readyz turned 503 too, so a load balancer
// took every node out at once. deploy/k8s/statefulset.yaml said it
// handed leadership over.
func TestAStoppedLeaderHandsItsLeadershipOver(t *testing.T) {
	nodes := nodetest.StartCluster(t, 3)
	var leader *nodetest.Node
	var others []*nodetest.Node
	nodetest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		leader, others = nil, nil
		for _, n := range nodes {
			if !n.Ready() {
				return fmt.Errorf("%s not ready", n.Config.NodeID)
			}
			if n.IsLeader() {
				leader = n
			} else {
				others = append(others, n)
			}
		}
		if leader == nil || len(others) != 2 {
			return errors.New("no single leader")
		}
		return nil
	})
	if err := leader.Stop(); err != nil {
		t.Fatal(err)
	}
	// Raft's timeouts are 1 s in tests: an election after a leader that
	// vanished takes longer than this.
	stopped := time.Now()
	nodetest.CheckFor(t, 500*time.Millisecond, 5*time.Millisecond, func() error {
		for _, n := range others {
			if n.IsLeader() {
				return nil
			}
		}
		return fmt.Errorf("no leader among the others %v after the leader %s stopped", time.Since(stopped).Round(time.Millisecond), leader.Config.NodeID)
	})
}
