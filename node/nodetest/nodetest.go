// Package nodetest starts real edgechat nodes for tests, the way
// httptest starts servers: every listener on 127.0.0.1 port 0, data in a
// temporary directory, stopped when the test ends.
package nodetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/internal/testutil/delayproxy"
	"github.com/edgechat/edgechat/internal/wire"
	"github.com/edgechat/edgechat/node"
)

// Node is a running test node.
type Node struct {
	*node.Node
	Config  node.Config
	HTTPURL string // http://127.0.0.1:port
	MQTTURL string // tcp://127.0.0.1:port
	WSURL   string // ws://127.0.0.1:port/mqtt

	stop     context.CancelFunc
	done     chan error
	stopOnce sync.Once
	stopErr  error
}

// Option changes the configuration of a test node.
type Option func(*node.Config)

// WithDev starts the node in dev mode.
func WithDev() Option { return func(c *node.Config) { c.Dev = true } }

// WithDataDir uses dir instead of a fresh temporary directory (restarts).
func WithDataDir(dir string) Option { return func(c *node.Config) { c.DataDir = dir } }

// WithPresence sets the heartbeat interval and the grace period.
func WithPresence(interval, grace time.Duration) Option {
	return func(c *node.Config) { c.Heartbeat, c.PresenceGrace = interval, grace }
}

// WithConfig edits the configuration freely.
func WithConfig(f func(*node.Config)) Option { return f }

// TestConfig is the configuration StartNode uses before options.
func TestConfig(t testing.TB) node.Config {
	cfg := node.Defaults()
	cfg.DataDir = t.TempDir()
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.MQTTAddr = "127.0.0.1:0"
	cfg.MQTTSAddr = "127.0.0.1:0"
	cfg.ClusterAddr = "127.0.0.1:0"
	cfg.Heartbeat = 200 * time.Millisecond
	cfg.PresenceGrace = 400 * time.Millisecond
	// Fast failover, yet not so fast that a leader on a loaded 2-core
	// test machine steps down for missing its lease (the lease is half of
	// this): it did at 50 ms under pipelined load, at 125 ms in CI (the
	// web client's Chromium tests alongside), failing a request with 503
	// in tests that are not about failover, and at 200 ms with every
	// package's tests running at once (contacts 201-448 ms late: a read
	// barrier's leader wait ran out, a media job's claim renewal failed
	// at each step-down and the job never finished, a sign-up lost its
	// profile).
	cfg.RaftTimeout = time.Second
	cfg.FastPassword = true
	// Presence, tokens, link retention and the like run faster than a
	// server's minimums allow (node.Config.FastTimers).
	cfg.FastTimers = true
	// Every test client comes from 127.0.0.1; rate-limit tests turn limits on.
	cfg.NoRateLimits = true
	cfg.MQTTPublishRate = "off"
	cfg.MQTTConnectRate = "off"
	cfg.MQTTSubscribeRate = "off"
	cfg.LogLevel = "warn"
	return cfg
}

// StartNode starts a node and waits until it is ready.
func StartNode(t testing.TB, opts ...Option) *Node {
	t.Helper()
	cfg := TestConfig(t)
	for _, o := range opts {
		o(&cfg)
	}
	n, err := Start(cfg, testLogger(t))
	if err != nil {
		t.Fatalf("nodetest: %v", err)
	}
	t.Cleanup(func() {
		if err := n.Stop(); err != nil {
			t.Errorf("nodetest: stopping node: %v", err)
		}
	})
	return n
}

// Start starts a node outside of a test's lifetime; call Stop.
func Start(cfg node.Config, log *slog.Logger) (*Node, error) {
	nd, err := node.New(cfg, log)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &Node{Node: nd, Config: cfg, stop: cancel, done: make(chan error, 1)}
	go func() { n.done <- nd.Run(ctx) }()
	deadline := time.Now().Add(30 * time.Second)
	for !nd.Ready() {
		select {
		case err := <-n.done:
			cancel()
			return nil, fmt.Errorf("node stopped before it was ready: %w", err)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			cancel()
			<-n.done
			return nil, errors.New("node not ready after 30s")
		}
	}
	n.HTTPURL = nd.HTTPURL()
	n.MQTTURL = "tcp://" + nd.MQTTAddr()
	n.WSURL = nd.WebSocketURL()
	return n, nil
}

// Stop stops the node and waits until it has released its data dir. It
// may be called more than once (a test stops a node; cleanup stops it again).
func (n *Node) Stop() error {
	n.stopOnce.Do(func() {
		n.stop()
		select {
		case err := <-n.done:
			if err != nil && !errors.Is(err, context.Canceled) {
				n.stopErr = err
			}
		case <-time.After(30 * time.Second):
			// Say where it is stuck: every goroutine's stack.
			var stacks bytes.Buffer
			_ = pprof.Lookup("goroutine").WriteTo(&stacks, 1)
			n.stopErr = fmt.Errorf("node did not stop within 30s; goroutines:\n%s", stacks.String())
		}
	})
	return n.stopErr
}

// Password is the password NewUser gives a user.
func Password(name string) string { return "password-" + name }

// NewUser registers name (password Password(name)) and returns an access token.
func (n *Node) NewUser(t testing.TB, name string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.CreateAccount(ctx, name, strings.ToUpper(name[:1])+name[1:]); err != nil {
		t.Fatalf("nodetest: creating %s: %v", name, err)
	}
	return n.Token(t, name)
}

// signUpKeys numbers the Idempotency-Keys of CreateAccount's sign-ups.
var signUpKeys atomic.Uint64

// CreateAccount registers name (password Password(name)) as a client
// would: with an Idempotency-Key, sent again with it while the cluster
// cannot commit (a leader change on a starved test machine). A retry of
// an account that did commit is answered as a replay and makes the
// profile if the first attempt committed the account but not the profile
// (treating the retry's ErrUsernameTaken as done left such an account
// without a profile, and a group with it was refused 400). Safe from any
// goroutine.
func (n *Node) CreateAccount(ctx context.Context, name, displayName string) error {
	key := fmt.Sprintf("nodetest-%s-%d", name, signUpKeys.Add(1))
	_, _, err := n.Auth.CreateAccountKeyed(ctx, name, Password(name), displayName, key)
	for err != nil && errors.Is(err, wire.ErrUnavailable) && ctx.Err() == nil {
		time.Sleep(50 * time.Millisecond)
		_, _, err = n.Auth.CreateAccountKeyed(ctx, name, Password(name), displayName, key)
	}
	return err
}

// Token logs name in and returns a fresh access token.
func (n *Node) Token(t testing.TB, name string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tok, err := n.Auth.Login(ctx, name, Password(name), "127.0.0.1")
	// A leader change on a starved test machine refuses the login's
	// commit for a moment; a client would sign in again.
	for err != nil && errors.Is(err, wire.ErrUnavailable) && ctx.Err() == nil {
		time.Sleep(50 * time.Millisecond)
		tok, err = n.Auth.Login(ctx, name, Password(name), "127.0.0.1")
	}
	if err != nil {
		t.Fatalf("nodetest: login %s: %v", name, err)
	}
	return tok.AccessToken
}

// CheckFor calls fn every `every` until it returns nil, and fails the
// test with fn's last error after total. It is testutil.CheckFor, kept
// here for the callers that import only nodetest.
func CheckFor(t testing.TB, total, every time.Duration, fn func() error) {
	t.Helper()
	testutil.CheckFor(t, total, every, fn)
}

// testLogger keeps a node's log in memory and prints it only when the
// test failed: goroutines may still log after the test returned, when
// t.Log would panic.
func testLogger(t testing.TB) *slog.Logger {
	level := slog.LevelWarn
	if os.Getenv("EDGECHAT_TEST_LOG") != "" {
		level = slog.LevelDebug
	}
	w := &logBuffer{}
	t.Cleanup(func() {
		if t.Failed() || os.Getenv("EDGECHAT_TEST_LOG") != "" {
			w.mu.Lock()
			t.Logf("node log:\n%s", w.b.String())
			w.mu.Unlock()
		}
	})
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (w *logBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.b.Len() < 8<<20 {
		w.b.Write(p)
	}
	return len(p), nil
}

// StartCluster starts n nodes (n1..nN) on 127.0.0.1 port 0: n1 forms a
// one-node cluster and the others join it through its cluster address,
// so the cluster grows to n voters the way an operator grows one. It
// returns when every node is ready.
func StartCluster(t testing.TB, n int, opts ...Option) []*Node {
	t.Helper()
	nodes := make([]*Node, 0, n)
	for i := 1; i <= n; i++ {
		id := fmt.Sprintf("n%d", i)
		o := append([]Option{WithConfig(func(c *node.Config) { c.NodeID = id })}, opts...)
		if i > 1 {
			first := nodes[0].ClusterAddr()
			o = append(o, WithConfig(func(c *node.Config) { c.Join = []string{first} }))
		}
		nodes = append(nodes, StartNode(t, o...))
	}
	return nodes
}

// BehindProxy makes cfg's node one that the other members reach only
// through a proxy (its ClusterAddr a free local port, AdvertiseCluster
// the proxy's): cutting the proxy cuts the others off from it while it
// can still reach them. The proxy is closed at the test's end.
func BehindProxy(t testing.TB, cfg *node.Config) *delayproxy.Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	bind := ln.Addr().String()
	_ = ln.Close()
	proxy, err := delayproxy.New(bind, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = proxy.Close() })
	cfg.ClusterAddr, cfg.AdvertiseCluster = bind, proxy.Addr()
	return proxy
}
