package node_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
)

// A fresh node started with the name of a live member (a copied config,
// the default --node-id n1) and --join is refused, with an error in its
// log, and the live member stays. Before: the leader took it for that
// member "whose address changed" and AddVoter rewrote the live member's
// address to the newcomer's, cutting the real member out of the cluster
// without any error.
func TestAJoinWithALiveMembersNameIsRefused(t *testing.T) {
	nodes := nodetest.StartCluster(t, 3)
	n1, n3 := nodes[0], nodes[2]
	adminTok := n1.NewUser(t, "root")
	realAddr := n3.ClusterAddr()

	cfg := nodetest.TestConfig(t)
	cfg.NodeID = "n3" // the name of a live member
	cfg.Join = []string{n1.ClusterAddr()}
	var logs testutil.SyncBuffer
	imp, err := node.New(cfg, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- imp.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	// The refusal is logged by the newcomer (nothing else to wait for:
	// before, the join succeeded silently and this never came).
	checkFor(t, 15*time.Second, 50*time.Millisecond, func() error {
		if !strings.Contains(logs.String(), "another node has this node's name") {
			return errors.New("no refusal in the joining node's log")
		}
		return nil
	})
	var status struct {
		Members []struct{ Name, ClusterAddr string }
	}
	api(t, n1, adminTok, "GET", "/cluster/status", nil, &status)
	for _, m := range status.Members {
		if m.Name == "n3" && m.ClusterAddr != realAddr {
			t.Fatalf("the live member n3 (%s) was replaced by a fresh node at %s that took its name; members %+v",
				realAddr, m.ClusterAddr, status.Members)
		}
	}
}
