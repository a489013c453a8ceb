package broker

import (
	"fmt"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/internal/testutil/mqtttest"
)

// In --dev a will (on an open topic) reaches the subscribers of every
// node, as any publish does, and a retained one is retained on every node.
// mochi publishes a will straight to its own subscribers, without the
// OnPublished hook that forwards publishes to the other nodes: before,
// only the node of the client that went away delivered its will.
func TestClusterWillReachesOtherNodes(t *testing.T) {
	c := startClusterOf(t, 2, func(c *clusterEnv) { c.config = func(cfg *Config) { cfg.Dev = true } })
	n1, n2 := c.nodes["n1"], c.nodes["n2"]
	watcher := mqtttest.MustDial(t, n2.addr, mqtttest.Options{ClientID: "watcher"})
	watcher.MustSub(t, "status/+")
	c.waitRoute(t, "n2", "status/+", true)

	// A publish on n1 reaches n2's watcher.
	pub := mqtttest.MustDial(t, n1.addr, mqtttest.Options{ClientID: "pub"})
	pub.Pub(t, "status/hello", 1, "hi")
	if got := watcher.Next(t); string(got.Payload) != "hi" {
		t.Fatalf("watcher on n2 got %q, want hi", got.Payload)
	}

	dev, _, err := mqtttest.Dial(t, n1.addr, mqtttest.Options{ClientID: "sensor",
		Will: &paho.WillMessage{Topic: "status/sensor", Payload: []byte("offline"), QoS: 1, Retain: true}})
	if err != nil {
		t.Fatal(err)
	}
	_ = dev.Conn.Close() // gone without DISCONNECT: the will is published

	if got := watcher.Next(t); got.Topic != "status/sensor" || string(got.Payload) != "offline" {
		t.Fatalf("watcher on n2 got %q on %q, want the will", got.Payload, got.Topic)
	}
	testutil.CheckFor(t, waitFor, time.Millisecond, func() error {
		if msgs := n2.b.srv.Topics.Messages("status/sensor"); len(msgs) != 1 || string(msgs[0].Payload) != "offline" {
			return fmt.Errorf("n2 retains %d messages on status/sensor", len(msgs))
		}
		return nil
	})
}
