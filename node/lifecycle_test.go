package node_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
)

// A node built and closed without Run releases its listeners and its data
// directory: the same directory and addresses serve a second node.
func TestCloseWithoutRun(t *testing.T) {
	cfg := nodetest.TestConfig(t)
	n, err := node.New(cfg, testutil.QuietLogger())
	if err != nil {
		t.Fatal(err)
	}
	httpAddr, mqttAddr := n.Gateway.Addr(), n.MQTTAddr()
	if err := n.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := n.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := n.Run(context.Background()); !errors.Is(err, node.ErrRunning) {
		t.Fatalf("Run after Close = %v, want ErrRunning", err)
	}
	cfg.HTTPAddr, cfg.MQTTAddr = httpAddr, mqttAddr
	again := nodetest.StartNode(t, nodetest.WithConfig(func(c *node.Config) { *c = cfg }))
	if again.MQTTAddr() != mqttAddr {
		t.Fatalf("MQTT on %s, want %s", again.MQTTAddr(), mqttAddr)
	}
}

// A New that fails half way releases what it took: here the HTTP port is
// taken, so New fails after Raft and the broker were up; the data
// directory (locked by Raft) and the MQTT port are free again.
func TestFailedNewReleases(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	cfg := nodetest.TestConfig(t)
	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mqttAddr := free.Addr().String()
	_ = free.Close()
	cfg.MQTTAddr, cfg.HTTPAddr = mqttAddr, busy.Addr().String()
	if _, err := node.New(cfg, testutil.QuietLogger()); err == nil {
		t.Fatal("New on a busy HTTP port succeeded")
	}
	nodetest.StartNode(t, nodetest.WithConfig(func(c *node.Config) { c.DataDir, c.MQTTAddr = cfg.DataDir, mqttAddr }))
}

// A New on a data directory another node holds fails with an error (it
// used to panic in its own clean-up, calling the FSM release function a
// failed openState had not returned), and leaves the first node running.
func TestNewOnALockedDataDir(t *testing.T) {
	first := nodetest.StartNode(t)
	cfg := nodetest.TestConfig(t)
	cfg.DataDir = first.Config.DataDir
	if n, err := node.New(cfg, testutil.QuietLogger()); err == nil {
		_ = n.Close()
		t.Fatal("New on a data directory in use succeeded")
	}
	if !first.Ready() {
		t.Fatal("the first node is not ready any more")
	}
}

// Close while Run runs stops Run, which returns without error.
func TestCloseStopsRun(t *testing.T) {
	n, err := node.New(nodetest.TestConfig(t), testutil.QuietLogger())
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- n.Run(context.Background()) }()
	testutil.CheckFor(t, 30*time.Second, 10*time.Millisecond, func() error {
		if !n.Ready() {
			return errors.New("not ready")
		}
		return nil
	})
	if err := n.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := testutil.Receive(t, done, 30*time.Second); err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// A node that says it is ready takes MQTT over WebSocket at once: /mqtt
// answers a plain GET with 426 (upgrade required), never the 503 it
// gives before the broker's listeners serve. (A node elects itself in
// milliseconds now, so readiness used to beat the listener's start.)
func TestReadyMeansWebSocketServes(t *testing.T) {
	for range 5 {
		n := nodetest.StartNode(t, nodetest.WithDev())
		resp, err := http.Get(n.HTTPURL + "/mqtt")
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusUpgradeRequired {
			t.Fatalf("GET /mqtt right after ready: %d, want 426", resp.StatusCode)
		}
	}
}
