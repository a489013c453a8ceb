package cluster

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/internal/testutil"
)

// Close releases what New took without Run: a second New on the same
// data directory (which takes its lock) succeeds, and proposals fail.
func TestCloseWithoutRun(t *testing.T) {
	dir := t.TempDir()
	db := openDB(t, t.TempDir())
	defer db.Close()
	for i := range 2 {
		f := fsm.New(db, testLogger(t))
		n, err := New(fastConfig(t, nodeOpts{dataDir: dir, bootstrap: true}), f)
		if err != nil {
			t.Fatalf("New #%d: %v", i+1, err)
		}
		if err := n.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if err := n.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
		if err := n.Run(context.Background()); err == nil {
			t.Fatal("Run after Close succeeded")
		}
		if _, err := n.Propose(context.Background(), cmdPut, []byte("a=b")); !errors.Is(err, ErrStopped) {
			t.Fatalf("Propose after Close: %v", err)
		}
	}
}

// Close stops a running Raft: Run returns and Close returns what it did.
func TestCloseStopsRun(t *testing.T) {
	db := openDB(t, t.TempDir())
	defer db.Close()
	f := fsm.New(db, testLogger(t))
	registerTestHandlers(f)
	n, err := New(fastConfig(t, nodeOpts{dataDir: t.TempDir(), bootstrap: true}), f)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- n.Run(context.Background()) }()
	waitReady(t, n)
	if _, err := n.Propose(context.Background(), cmdPut, []byte("a=b")); err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := testutil.Receive(t, done, 10*time.Second); err != nil {
		t.Fatalf("Run: %v", err)
	}
}
