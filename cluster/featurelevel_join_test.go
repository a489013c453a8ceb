package cluster

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/edgechat/edgechat/cluster/featurelevel"
	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/internal/wire"
)

// Once the cluster's feature level is raised, a node that supports a
// lower one (an older version: it sends no level) is refused when it
// asks to join, and nothing changes; a node that supports the level
// joins.
func TestAJoinBelowTheFeatureLevelIsRefused(t *testing.T) {
	leader := startNode(t, nodeOpts{bootstrap: true, tweak: multiTimeouts, beforeNew: func(f *fsm.FSM) { featurelevel.Register(f) }})
	waitReady(t, leader.Raft)
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if !leader.IsLeader() {
			return fmt.Errorf("not leader yet")
		}
		return nil
	})
	if _, err := leader.Propose(context.Background(), wire.CmdFeatureLevel, featurelevel.Payload(1)); err != nil {
		t.Fatal(err)
	}
	var r ChangeReply
	if err := leader.Call(context.Background(), leader.Addr(), "Cluster.Join", &JoinArgs{Name: "old", Addr: "127.0.0.1:1"}, &r); err != nil {
		t.Fatal(err)
	}
	if r.Code != codeOlder {
		t.Fatalf("join of a node at level 0: %+v, want code %q", r, codeOlder)
	}
	if ms := leader.Members(); len(ms) != 1 {
		t.Fatalf("members after the refused join: %+v", ms)
	}

	startNode(t, nodeOpts{tweak: func(c *Config) {
		multiTimeouts(c)
		c.NodeName = "n2"
		c.Join = []string{leader.Addr()}
		c.FeatureLevel = 1
	}})
	checkFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		for _, m := range leader.Members() {
			if m.Name == "n2" && m.Suffrage == "Voter" {
				return nil
			}
		}
		return fmt.Errorf("members %+v", leader.Members())
	})
}
