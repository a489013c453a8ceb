package node_test

import (
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
)

// A data directory started again under another node ID (an operator who
// changed EDGECHAT_NODE_ID, a pod template whose naming changed) is
// refused at start, naming the ID it belongs to: the node started, never
// became ready, and said "this node is not a member of its cluster (it
// left or was removed) ... remove its data directory to join as a new
// node", advice that destroys the data of a one-node cluster.
func TestADataDirectoryKeepsItsNodeID(t *testing.T) {
	cfg := nodetest.TestConfig(t)
	cfg.NodeID = "n1"
	n, err := nodetest.Start(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Stop(); err != nil {
		t.Fatal(err)
	}
	cfg.NodeID = "n9"
	other, err := node.New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err == nil {
		_ = other.Close()
		t.Fatal("a data directory of n1 started as n9; want it refused")
	}
	if !strings.Contains(err.Error(), `belongs to node "n1"`) || !strings.Contains(err.Error(), "--node-id n1") {
		t.Fatalf("refused with %q; want the ID it belongs to and the flag to give", err)
	}
	// Under its own ID it starts as before.
	cfg.NodeID = "n1"
	again, err := nodetest.Start(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if err := again.Stop(); err != nil {
		t.Fatal(err)
	}
}
