package cluster

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/internal/testutil"
)

// checkFor is testutil.CheckFor: poll until fn succeeds or fail after total.
var checkFor = testutil.CheckFor

// testWriter sends log lines to t.Log until the test ends (Raft can log
// from its goroutines late, and t.Log after the end panics).
type testWriter struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(string(p))
	}
	return len(p), nil
}

func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		w := &testWriter{t: t}
		t.Cleanup(func() { w.mu.Lock(); w.done = true; w.mu.Unlock() })
		return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func openDB(t testing.TB, dir string) *badger.DB {
	t.Helper()
	db, err := badger.Open(badger.DefaultOptions(dir).WithLogger(nil).
		WithMemTableSize(8 << 20).WithNumMemtables(2).
		WithBlockCacheSize(8 << 20).WithIndexCacheSize(8 << 20))
	if err != nil {
		t.Fatalf("open badger: %v", err)
	}
	return db
}

// Test command types, far from the real ones in wire.
const (
	cmdPut    byte = 0xF0 // payload "key=value": stores r/test/key, returns "ok:key"
	cmdReject byte = 0xF1 // always fails with errRejected, writes nothing
	cmdOrder  byte = 0xF8 // stores the payload under r/test/order/{position}: the apply order
)

var errRejected = errors.New("rejected by handler")

func registerTestHandlers(f *fsm.FSM) {
	f.Register(cmdPut, func(tx *badger.Txn, _ fsm.Position, p []byte) (any, error) {
		k, v, ok := cutByte(p, '=')
		if !ok {
			return nil, fmt.Errorf("bad put %q", p)
		}
		if err := tx.Set(append([]byte("r/test/"), k...), v); err != nil {
			return nil, err
		}
		return "ok:" + string(k), nil
	})
	f.Register(cmdReject, func(*badger.Txn, fsm.Position, []byte) (any, error) {
		return nil, errRejected
	})
	f.Register(cmdOrder, func(tx *badger.Txn, at fsm.Position, p []byte) (any, error) {
		return nil, tx.Set(binary.BigEndian.AppendUint64([]byte("r/test/order/"), at.Seq()), slices.Clone(p))
	})
}

func cutByte(p []byte, sep byte) ([]byte, []byte, bool) {
	for i, c := range p {
		if c == sep {
			return p[:i], p[i+1:], true
		}
	}
	return nil, nil, false
}

func getKey(db *badger.DB, key string) (string, error) {
	var out string
	err := db.View(func(tx *badger.Txn) error {
		it, err := tx.Get([]byte(key))
		if err != nil {
			return err
		}
		v, err := it.ValueCopy(nil)
		out = string(v)
		return err
	})
	return out, err
}

// testNode is a running Raft with its own Badger and metrics registry.
type testNode struct {
	*Raft
	f      *fsm.FSM
	db     *badger.DB
	reg    *prometheus.Registry
	cancel context.CancelFunc
	done   chan error
}

type nodeOpts struct {
	dataDir   string // raft state
	dbDir     string // badger
	bootstrap bool
	tweak     func(*Config)
	beforeNew func(*fsm.FSM)
}

func fastConfig(t testing.TB, o nodeOpts) Config {
	cfg := Config{
		NodeName:  "n1",
		DataDir:   o.dataDir,
		BindAddr:  "127.0.0.1:0",
		Bootstrap: o.bootstrap,
		// Not shorter: with -race on a loaded 2-core machine a 50 ms
		// lease made leaders step down in the middle of tests.
		HeartbeatTimeout:   250 * time.Millisecond,
		ElectionTimeout:    250 * time.Millisecond,
		LeaderLeaseTimeout: 125 * time.Millisecond,
		Logger:             testLogger(t),
	}
	if o.tweak != nil {
		o.tweak(&cfg)
	}
	return cfg
}

func startNode(t testing.TB, o nodeOpts) *testNode {
	t.Helper()
	if o.dataDir == "" {
		o.dataDir = t.TempDir()
	}
	if o.dbDir == "" {
		o.dbDir = filepath.Join(o.dataDir, "badger")
	}
	db := openDB(t, o.dbDir)
	f := fsm.New(db, testLogger(t))
	registerTestHandlers(f)
	if o.beforeNew != nil {
		o.beforeNew(f)
	}
	reg := prometheus.NewRegistry()
	cfg := fastConfig(t, o)
	cfg.Registerer = reg
	n, err := New(cfg, f)
	if err != nil {
		_ = db.Close()
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	tn := &testNode{Raft: n, f: f, db: db, reg: reg, cancel: cancel, done: make(chan error, 1)}
	go func() { tn.done <- n.Run(ctx) }()
	t.Cleanup(func() { tn.stop(t) })
	return tn
}

// stop cancels Run, waits for it and closes Badger; safe to call twice.
func (tn *testNode) stop(t testing.TB) {
	t.Helper()
	if tn.cancel == nil {
		return
	}
	tn.cancel()
	tn.cancel = nil
	select {
	case err := <-tn.done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("Run did not return after cancel")
	}
	if err := tn.db.Close(); err != nil {
		t.Errorf("close badger: %v", err)
	}
}

func waitReady(t testing.TB, n *Raft) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.WaitReady(ctx); err != nil {
		t.Fatalf("WaitReady: %v", err)
	}
}

// histogram returns the sample count and sum of a histogram in reg.
func histogram(t testing.TB, reg *prometheus.Registry, name string) (uint64, float64) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			h := mf.GetMetric()[0].GetHistogram()
			return h.GetSampleCount(), h.GetSampleSum()
		}
	}
	t.Fatalf("metric %s not found", name)
	return 0, 0
}

func counter(t testing.TB, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if labelIs(m, "result", label) {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func labelIs(m *dto.Metric, name, value string) bool {
	for _, l := range m.GetLabel() {
		if l.GetName() == name && l.GetValue() == value {
			return true
		}
	}
	return false
}
