package broker

import (
	"fmt"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/internal/testutil/mqtttest"
)

// restart stops node name's broker and starts a new one in its place (a
// node restarted: same name, route table and log, nothing in memory).
func (c *clusterEnv) restart(t *testing.T, name string) *testEnv {
	t.Helper()
	c.nodes[name].close()
	e := startBrokerWith(t, func(cfg *Config) {
		cfg.ForwardRetryMax = 20 * time.Millisecond
		cfg.ForwardTimeout = time.Second
		if c.config != nil {
			c.config(cfg)
		}
	}, func(d *Deps) {
		d.Cluster = &fabricNode{f: c.fab, name: name}
		d.Proposer = c.log
		d.Routes = c.tabs[name]
	})
	c.nodes[name] = e
	return e
}

// In a --dev cluster a node that restarts (or joins) gets the retained
// messages of open topics from another node, as it gets the retained
// presence back: a subscriber gets the same retained messages on every
// node. It had none: after a restart, 'mosquitto_sub -t cfg/#' answered
// 'cfg/mode eco' on the other nodes and nothing on that one, until each
// topic was published again. One cleared meanwhile is not brought back.
func TestClusterRestartedNodeGetsTheRetainedMessages(t *testing.T) {
	c := startClusterOf(t, 2, func(c *clusterEnv) { c.config = func(cfg *Config) { cfg.Dev = true } })
	pub := mqtttest.MustDial(t, c.nodes["n1"].addr, mqtttest.Options{ClientID: "pub"})
	for _, m := range [][2]string{{"cfg/mode", "eco"}, {"cfg/gone", "x"}} {
		if _, err := pub.Publish(t.Context(), retainedPublish(m[0], m[1])); err != nil {
			t.Fatal(err)
		}
	}
	waitRetained := func(node, topic, want string) {
		t.Helper()
		testutil.CheckFor(t, waitFor, 5*time.Millisecond, func() error {
			got, ok := c.nodes[node].b.Retained(topic)
			if want == "" && ok || want != "" && (!ok || string(got) != want) {
				return fmt.Errorf("%s retains %q (%v) on %s, want %q", node, got, ok, topic, want)
			}
			return nil
		})
	}
	waitRetained("n2", "cfg/mode", "eco")

	n2 := c.restart(t, "n2")
	waitRetained("n2", "cfg/mode", "eco")
	sub := mqtttest.MustDial(t, n2.addr, mqtttest.Options{ClientID: "sub"})
	sub.MustSub(t, "cfg/mode")
	if got := sub.Next(t); got.Topic != "cfg/mode" || string(got.Payload) != "eco" || !got.Retain {
		t.Fatalf("a subscriber on the restarted n2 got %q on %s (retain %v), want the retained eco", got.Payload, got.Topic, got.Retain)
	}

	// Cleared while n2 was away: not brought back by the next restart.
	if _, err := pub.Publish(t.Context(), retainedPublish("cfg/gone", "")); err != nil {
		t.Fatal(err)
	}
	waitRetained("n1", "cfg/gone", "")
	c.restart(t, "n2")
	waitRetained("n2", "cfg/mode", "eco")
	waitRetained("n2", "cfg/gone", "")
}

// retainedPublish is a QoS 1 retained publish (an empty payload clears).
func retainedPublish(topic, payload string) *paho.Publish {
	return &paho.Publish{Topic: topic, QoS: 1, Retain: true, Payload: []byte(payload)}
}
