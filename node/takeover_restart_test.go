package node_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/testutil/mqtttest"
	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
)

// A node that crashed leaves its client registry entries behind. When it
// comes back and a client reconnects to it before the first reconcile,
// the node must still register that connection (a new registry seq), so
// that the same client ID connecting to another node takes it over.
// Before: the connection numbers restarted at 1 in every process, the
// reconnect got the number of its stale entry, the node took the entry
// for its own and never registered: the client ID stayed live on two
// nodes.
func TestARestartedNodeRegistersAReconnectThatMatchesItsStaleEntry(t *testing.T) {
	nodes := nodetest.StartCluster(t, 3)
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	aliceTok := n1.NewUser(t, "alice")

	first := mustConnectV5(t, n3.MQTTURL, "alice", "phone", aliceTok)
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if lookupOn(t, n1, "alice/phone") != "n3" {
			return fmt.Errorf("alice/phone not registered on n3 yet")
		}
		return nil
	})

	// n3 stops without withdrawing (as on a crash).
	cfg := n3.Config
	cfg.ClusterAddr = n3.ClusterAddr() // back at the same address
	cfg.Join = []string{n1.ClusterAddr()}
	if err := n3.Stop(); err != nil {
		t.Fatal(err)
	}
	<-first.Done()
	stale, ok, err := n1.Broker.Registry().Lookup("alice/phone")
	if err != nil || !ok || stale.Node != "n3" {
		t.Fatalf("n3's entry of alice/phone after its stop: %+v %v %v, want one naming n3", stale, ok, err)
	}

	nd, err := node.New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	// alice's phone reconnects at once: its CONNECT waits in the bound
	// listener's backlog and is the first thing the new process serves.
	type dialed struct {
		c   *mqtttest.Client
		err error
	}
	ch := make(chan dialed, 1)
	go func() {
		c, _, err := mqtttest.Dial(t, nd.MQTTAddr(), mqtttest.Options{ClientID: "alice/phone", Username: "alice",
			Password: aliceTok, Timeout: 60 * time.Second})
		ch <- dialed{c, err}
	}()
	time.Sleep(200 * time.Millisecond) // orders the dial before Run (no condition to poll)
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- nd.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-runDone })
	d := <-ch
	if d.err != nil {
		t.Fatalf("reconnect to n3: %v", d.err)
	}
	again := d.c

	// The reconnect is registered anew: a later registration than the stale one.
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		e, _, err := n1.Broker.Registry().Lookup("alice/phone")
		if err != nil {
			return err
		}
		if e.Node != "n3" || e.Seq <= stale.Seq {
			return fmt.Errorf("registry names %+v; the reconnect to n3 is not registered (stale: %+v)", e, stale)
		}
		return nil
	})

	// The same client ID connects on n2: n3's connection is taken over.
	cur := mustConnectV5(t, n2.MQTTURL, "alice", "phone", aliceTok)
	select {
	case <-again.Done():
	case <-time.After(5 * time.Second):
		e, _, _ := n1.Broker.Registry().Lookup("alice/phone")
		t.Fatalf("alice/phone live on n3 and on n2 at once: n3's connection not taken over (registry: %+v)", e)
	}
	select {
	case <-cur.Done():
		t.Fatal("the new connection on n2 was closed")
	default:
	}
}
