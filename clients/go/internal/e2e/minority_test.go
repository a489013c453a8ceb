package e2e_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/internal/testutil/delayproxy"
	"github.com/edgechat/edgechat/node/nodetest"
)

// startCutOffableNode adds a third node to a two-node cluster, reached
// by the others through a proxy that the test can cut: cut, the others
// cannot reach it (it is in a minority of one and can commit nothing),
// while its clients still reach it.
func startCutOffableNode(t *testing.T, join string) (*nodetest.Node, *delayproxy.Proxy) {
	t.Helper()
	cfg := nodetest.TestConfig(t)
	cfg.NodeID = "n3"
	proxy := nodetest.BehindProxy(t, &cfg)
	cfg.Join = []string{join}
	n3, err := nodetest.Start(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n3.Stop() })
	return n3, proxy
}

// A client given several nodes does not stay on one cut off from its
// cluster: that node commits nothing (every publish answered 0x83 after
// its commit timeout) and delivers nothing committed elsewhere, while
// the other nodes work. Send moves the client to another node and the
// message goes.
func TestSendMovesOffANodeCutOffFromItsCluster(t *testing.T) {
	nodes := nodetest.StartCluster(t, 2)
	n1, n2 := nodes[0], nodes[1]
	aliceTok, bobTok := n1.NewUser(t, "alice"), n1.NewUser(t, "bob")
	n3, proxy := startCutOffableNode(t, n1.ClusterAddr())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	ab := newInbox()
	dial(t, []string{n1.WSURL}, "", aliceTok, ab, nil)
	bob := dial(t, []string{n3.WSURL, n2.WSURL}, "", bobTok, nil, nil)
	first, err := bob.Send(ctx, "alice", "through n3 while it is in the cluster")
	if err != nil {
		t.Fatal(err)
	}
	ab.waitOnce(t, first.ID)

	proxy.SetCut(true)
	testutil.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		resp, err := http.Get(n3.HTTPURL + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable {
			return fmt.Errorf("n3's /readyz answers %d, want 503 once it is cut off", resp.StatusCode)
		}
		return nil
	})
	if !bob.Connected() {
		t.Fatal("bob is not connected to n3 any more: the test shows nothing")
	}
	sctx, scancel := context.WithTimeout(ctx, 30*time.Second)
	defer scancel()
	m, err := bob.Send(sctx, "alice", "while n3 is cut off")
	if err != nil {
		t.Fatalf("bob's Send while his node n3 is cut off (n2 works): %v", err)
	}
	if m.ID == "" {
		t.Fatalf("Send returned %+v without an ID", m)
	}
	ab.waitOnce(t, m.ID)
}

// A client that only receives, on a node cut off from its cluster, is
// moved off it: that node delivers nothing committed elsewhere, and
// nothing told the client (it publishes nothing that could be refused),
// so it stayed there, receiving nothing, for as long as the partition
// lasted. The node closes its clients' connections once it counts itself
// down (--node-down-after without a leader) and refuses new ones while
// it does; the SDK reconnects to the next node and syncs.
func TestReceiverMovesOffANodeCutOffFromItsCluster(t *testing.T) {
	nodes := nodetest.StartCluster(t, 2)
	n1, n2 := nodes[0], nodes[1]
	aliceTok, bobTok := n1.NewUser(t, "alice"), n1.NewUser(t, "bob")
	n3, proxy := startCutOffableNode(t, n1.ClusterAddr())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	alice := dial(t, []string{n1.WSURL}, "", aliceTok, nil, nil)
	bb := newInbox()
	bob := dial(t, []string{n3.WSURL, n2.WSURL}, "", bobTok, bb, nil)
	first, err := alice.Send(ctx, "bob", "to bob on n3 while it is in the cluster")
	if err != nil {
		t.Fatal(err)
	}
	bb.waitOnce(t, first.ID)

	proxy.SetCut(true)
	m, err := alice.Send(ctx, "bob", "while bob's node n3 is cut off")
	if err != nil {
		t.Fatal(err)
	}
	testutil.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		if n := bb.count(m.ID); n != 1 {
			return fmt.Errorf("bob (receiving only, on n3, cut off; n2 works) got alice's message %d times, want 1; connection changes %v", n, bb.connections())
		}
		return nil
	})
	if !bob.Connected() {
		t.Fatal("bob is not connected")
	}
}

// connections is what OnConnectionChange reported, in order.
func (b *inbox) connections() []bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.connected)
}
