package broker

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/internal/testutil/mqtttest"
)

// In --dev a publish keeps its MQTT 5 Message Expiry Interval on the
// other nodes of a cluster: their subscribers get what is left of it,
// and a retained message expires there as on the node it was published
// to. The forwarded copy carried the other publish properties but not
// the expiry: on the other nodes it never expired, so a retained
// message with an expiry stayed retained for good everywhere but on its
// own node.
func TestClusterForwardKeepsMessageExpiry(t *testing.T) {
	c := startClusterOf(t, 2, func(c *clusterEnv) { c.config = func(cfg *Config) { cfg.Dev = true } })
	n1, n2 := c.nodes["n1"], c.nodes["n2"]
	watcher := mqtttest.MustDial(t, n2.addr, mqtttest.Options{ClientID: "watcher"})
	watcher.MustSub(t, "sensors/+")
	c.waitRoute(t, "n2", "sensors/+", true)
	pub := mqtttest.MustDial(t, n1.addr, mqtttest.Options{ClientID: "pub"})
	publish := func(topic string, expiry uint32, retain bool) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		if _, err := pub.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Retain: retain, Payload: []byte("21.5"),
			Properties: &paho.PublishProperties{MessageExpiry: &expiry}}); err != nil {
			t.Fatalf("publish %s: %v", topic, err)
		}
	}

	publish("sensors/live", 60, false)
	got := watcher.Next(t)
	if got.Topic != "sensors/live" || got.Properties == nil || got.Properties.MessageExpiry == nil ||
		*got.Properties.MessageExpiry == 0 || *got.Properties.MessageExpiry > 60 {
		var e any
		if got.Properties != nil && got.Properties.MessageExpiry != nil {
			e = *got.Properties.MessageExpiry
		}
		t.Fatalf("the watcher on n2 got %s with message expiry %v, want sensors/live with 1..60", got.Topic, e)
	}

	publish("sensors/brief", 1, true)
	if got := watcher.Next(t); got.Topic != "sensors/brief" {
		t.Fatalf("the watcher on n2 got %s, want sensors/brief", got.Topic)
	}
	testutil.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		for _, name := range []string{"n1", "n2"} {
			if _, ok := c.nodes[name].b.srv.Topics.Retained.Get("sensors/brief"); ok {
				return fmt.Errorf("%s still retains sensors/brief, whose message expiry (1 s) passed", name)
			}
		}
		return nil
	})
}
