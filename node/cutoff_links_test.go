package node_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgechat/edgechat/internal/testutil/delayproxy"
	"github.com/edgechat/edgechat/internal/testutil/mqtttest"
	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
)

// A node cut off from its cluster closes the region links connected to
// it and refuses them while it is, as it does its users' connections,
// so that they dial again and reach a node that gets the log (the link
// URL is the region's load balancer, and the cut-off node answers
// /readyz 503). A link's batches need a commit (answered 0x83 there,
// after which the link dials again), but what the link receives is
// live: the presence, typing and receipts of the region's users that
// the other region subscribed to. Left connected to a node that gets
// none of it, a quiet link stayed up for as long as the partition
// lasted, and the other region showed its users' presence as last
// heard (online) rather than unknown. Region us: n1, n2 and n3, which
// the others reach through a proxy that is cut; eu's link lands on n3.
func TestANodeCutOffSendsRegionLinksElsewhere(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "link-secret")
	if err := os.WriteFile(secret, []byte(nodetest.LinkSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	intoUS, intoEU := forwarder(t), forwarder(t)
	inRegion := func(region string, number int, other string, to *delayproxy.Proxy) func(c *node.Config) {
		return func(c *node.Config) {
			c.Region, c.RegionNumber = region, number
			c.Links = []string{other + "=tcp://" + to.Addr()}
			c.LinkSecretFile = secret
		}
	}
	usNodes := nodetest.StartCluster(t, 2, nodetest.WithConfig(inRegion("us", 2, "eu", intoEU)))
	cfg := nodetest.TestConfig(t)
	cfg.NodeID = "n3"
	inRegion("us", 2, "eu", intoEU)(&cfg)
	cutN3 := nodetest.BehindProxy(t, &cfg)
	cfg.Join = []string{usNodes[0].ClusterAddr()}
	n3, n3Logs := runLogged(t, cfg)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("n3 log:\n%s", n3Logs.String())
		}
	})
	checkFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		if !n3.Ready() {
			return fmt.Errorf("n3 not ready")
		}
		return nil
	})
	eu := nodetest.StartNode(t, nodetest.WithConfig(inRegion("eu", 1, "us", intoUS)))
	intoUS.SetTarget(n3.MQTTAddr())
	intoEU.SetTarget(eu.MQTTAddr())
	linkState := func() string {
		for _, l := range eu.Region.Status() {
			if l.Name == "us" {
				return l.State
			}
		}
		return "none"
	}
	checkFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		if st := linkState(); st != "up" {
			return fmt.Errorf("eu's link to us (n3) is %s", st)
		}
		return nil
	})

	alice := mustConnectV5(t, "tcp://"+n3.MQTTAddr(), "alice", "phone", usNodes[0].NewUser(t, "alice"))

	cutN3.SetCut(true)
	checkFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		if _, ok := alice.ServerDisconnect(); !ok {
			return errors.New("n3 has not sent alice away yet: not cut off yet")
		}
		if st := linkState(); st != "down" {
			return fmt.Errorf("eu's link to us is %s on n3, which sent its users away (cut off from its cluster)", st)
		}
		return nil
	})
	// n3 refuses a link while it is cut off, as it refuses users.
	c, ca, err := mqtttest.Open("tcp://"+n3.MQTTAddr(), mqtttest.Options{ClientID: "$link/eu", Username: "$link/eu", Password: nodetest.LinkSecret})
	if err == nil {
		_ = c.Disconnect(&paho.Disconnect{})
		t.Fatal("n3, cut off, took a link from eu")
	}
	if ca == nil || ca.ReasonCode != 0x88 {
		t.Fatalf("a link's CONNECT to n3 while it is cut off: %+v %v, want CONNACK 0x88", ca, err)
	}
	// The load balancer sends the link to n1, which gets the log.
	intoUS.SetTarget(usNodes[0].MQTTAddr())
	checkFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		if st := linkState(); st != "up" {
			return fmt.Errorf("eu's link to us (n1) is %s", st)
		}
		return nil
	})
}

// forwarder is a proxy without delay whose target is set later.
func forwarder(t *testing.T) *delayproxy.Proxy {
	t.Helper()
	p, err := delayproxy.New("", 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}
