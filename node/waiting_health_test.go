package node_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
)

// A node that waits for its cluster (forming one with --bootstrap-expect
// before the others are up, or joining one that has no quorum) answered
// no HTTP at all: the listener was bound but served only once Raft had a
// leader. operations.md says /readyz is 503 until the cluster forms, and
// /healthz that the process serves HTTP; Kubernetes' startup and liveness
// probes and haproxy's checks timed out instead. Now /healthz answers 200,
// /readyz 503 and every other request 503 unavailable (never a hang)
// while the node waits.
func TestAWaitingNodeAnswersItsHealthChecks(t *testing.T) {
	n, _ := startWaitingNode(t)
	client := &http.Client{Timeout: 2 * time.Second}
	get := func(path string) (int, error) {
		resp, err := client.Get(n.HTTPURL() + path)
		if err != nil {
			return 0, err
		}
		_ = resp.Body.Close()
		return resp.StatusCode, nil
	}
	nodetest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if st, err := get("/healthz"); err != nil || st != http.StatusOK {
			return fmt.Errorf("/healthz of a node waiting for its cluster: %d %v", st, err)
		}
		return nil
	})
	for path, want := range map[string]int{"/readyz": http.StatusServiceUnavailable, "/user/me": http.StatusServiceUnavailable,
		"/metrics": http.StatusOK} {
		if st, err := get(path); err != nil || st != want {
			t.Errorf("%s of a node waiting for its cluster: %d %v, want %d", path, st, err, want)
		}
	}
	if n.Ready() {
		t.Fatal("the node says it is ready without a cluster")
	}
}

// A node that comes up before a majority of its members waits for them
// for as long as it runs, saying so in its log, instead of exiting after
// a minute (which made a whole cluster started minutes apart, or pods
// held back by an image pull, restart in a loop); it stops cleanly when
// told to while it waits.
func TestANodeWaitsForItsClusterAsLongAsItRuns(t *testing.T) {
	cfg := waitingConfig(t)
	cfg.StartWaitLogEvery = 20 * time.Millisecond
	var logs testutil.SyncBuffer
	n, err := node.New(cfg, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	nodetest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if k := strings.Count(logs.String(), "waiting for the cluster: no leader yet"); k < 5 {
			return fmt.Errorf("%d waiting lines in the log", k)
		}
		return nil
	})
	select {
	case err := <-done:
		t.Fatalf("Run returned while the cluster was not there: %v", err)
	default:
	}
	cancel()
	if err := testutil.Receive(t, done, 10*time.Second); err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("Run after a stop while waiting: %v", err)
	}
}

// startWaitingNode runs a node that waits for its cluster for as long
// as the test runs: --bootstrap-expect 2 and a --join peer that never
// answers Raft.
func startWaitingNode(t *testing.T) (*node.Node, node.Config) {
	t.Helper()
	cfg := waitingConfig(t)
	n, _ := runLogged(t, cfg)
	return n, cfg
}

// waitingConfig is the configuration of a node that waits for its
// cluster for as long as it runs: --bootstrap-expect 2 and a --join peer
// that never answers Raft.
func waitingConfig(t *testing.T) node.Config {
	t.Helper()
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	peer := dead.Addr().String()
	_ = dead.Close()
	cfg := nodetest.TestConfig(t)
	cfg.NodeID = "n1"
	cfg.BootstrapExpect = 2
	cfg.Join = []string{peer}
	return cfg
}

// runLogged runs a node of cfg until the test ends (Run must then
// return nothing but the cancellation), its log in the buffer returned.
func runLogged(t *testing.T, cfg node.Config) (*node.Node, *testutil.SyncBuffer) {
	t.Helper()
	logs := &testutil.SyncBuffer{}
	n, err := node.New(cfg, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := testutil.Receive(t, done, 10*time.Second); err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("Run: %v", err)
		}
	})
	return n, logs
}

// /readyz of a node waiting for its cluster says why it is not ready, as
// its log does: it answered "not ready: node not ready", which told an
// operator looking at a probe (or curl) nothing of what to fix.
func TestAWaitingNodeSaysWhyItIsNotReady(t *testing.T) {
	n, _ := startWaitingNode(t)
	client := &http.Client{Timeout: 2 * time.Second}
	nodetest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		resp, err := client.Get(n.HTTPURL() + "/readyz")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(b), "waiting for the cluster: no leader yet") {
			return fmt.Errorf("/readyz of a node waiting for its cluster: %d %s, want 503 saying it waits for its cluster", resp.StatusCode, b)
		}
		return nil
	})
}

// /metrics tells whether the node is ready and whether it leads, so that
// an operator can alert from Prometheus alone on a node out of service
// (edgechat_ready == 0 for minutes) and on a cluster without a leader
// (sum(edgechat_raft_leader) == 0): no series said either, only /readyz
// did, which Prometheus does not scrape.
func TestMetricsTellReadinessAndLeadership(t *testing.T) {
	metric := func(url, name string) (string, error) {
		resp, err := http.Get(url + "/metrics")
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, name+" "); ok {
				return v, nil
			}
		}
		return "", fmt.Errorf("no %s in /metrics", name)
	}
	waiting, _ := startWaitingNode(t)
	serving := nodetest.StartNode(t)
	for _, c := range []struct {
		what, url, ready, leader string
	}{
		{"a node waiting for its cluster", waiting.HTTPURL(), "0", "0"},
		{"a one-node cluster", serving.HTTPURL, "1", "1"},
	} {
		nodetest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
			ready, err := metric(c.url, "edgechat_ready")
			if err != nil {
				return fmt.Errorf("%s: %v", c.what, err)
			}
			leader, err := metric(c.url, "edgechat_raft_leader")
			if err != nil {
				return fmt.Errorf("%s: %v", c.what, err)
			}
			if ready != c.ready || leader != c.leader {
				return fmt.Errorf("%s: edgechat_ready %s, edgechat_raft_leader %s; want %s, %s", c.what, ready, leader, c.ready, c.leader)
			}
			return nil
		})
	}
}

// A node stopped while it waits for its cluster reports the stop
// (context.Canceled), also when its wait's own timer had run out a moment
// before: it returned "waiting for a leader: context deadline exceeded",
// an error, and failed a CI run (a test's cleanup saw a stop reported as
// a failure). The short log period makes the timer run out all the time.
func TestANodeStoppedWhileWaitingReportsTheStop(t *testing.T) {
	for i := range 8 {
		cfg := waitingConfig(t)
		cfg.StartWaitLogEvery = 50 * time.Microsecond
		n, err := node.New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- n.Run(ctx) }()
		nodetest.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
			resp, err := http.Get(n.HTTPURL() + "/healthz")
			if err != nil {
				return err
			}
			_ = resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("/healthz %d", resp.StatusCode)
			}
			return nil
		})
		cancel()
		if err := testutil.Receive(t, done, 10*time.Second); !errors.Is(err, context.Canceled) {
			t.Fatalf("stop %d: Run returned %v, want the cancellation", i, err)
		}
	}
}
