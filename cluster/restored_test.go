package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"

	"github.com/edgechat/edgechat/cluster/fsm"
)

// TestBootstrapOnRestoredState: a node whose database holds a state at
// applied index X (as `edgechat restore` leaves it) and no Raft state
// bootstraps with its log after X: new proposals apply (they would be
// skipped as replays at indexes <= X), the state survives, a restart
// keeps both, and a node that joins gets the whole state.
func TestBootstrapOnRestoredState(t *testing.T) {
	src := startNode(t, nodeOpts{bootstrap: true})
	waitReady(t, src.Raft)
	for i := range 50 {
		if _, err := src.Propose(context.Background(), cmdPut, fmt.Appendf(nil, "old%d=v%d", i, i)); err != nil {
			t.Fatal(err)
		}
	}
	_, applied, rc, err := src.f.OpenState()
	if err != nil {
		t.Fatal(err)
	}
	// The new node's database, filled from the stream as restore does.
	dir := t.TempDir()
	db := openDB(t, filepath.Join(dir, "badger"))
	if err := fsm.New(db, testLogger(t)).Restore(rc); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	src.stop(t)

	// Joining a cluster with it is refused: the cluster's entries would
	// be skipped up to the restored index.
	cfg := fastConfig(t, nodeOpts{dataDir: dir})
	cfg.NodeName, cfg.BindAddr, cfg.Join = "r1", "127.0.0.1:0", []string{"127.0.0.1:1"}
	db = openDB(t, filepath.Join(dir, "badger"))
	if _, err := New(cfg, fsm.New(db, testLogger(t))); !errors.Is(err, ErrStateWithoutLog) {
		t.Fatalf("joining with a restored state: %v, want ErrStateWithoutLog", err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	m := &member{name: "r1", dir: dir}
	m.start(t, "127.0.0.1:0", func(c *Config) { c.Bootstrap = true })
	waitReady(t, m.Raft)
	if got := m.Stats().LastIndex; got <= applied {
		t.Fatalf("restored node's log ends at %d, want after the state's %d", got, applied)
	}
	if v, err := m.Propose(context.Background(), cmdPut, []byte("new=1")); err != nil || v != "ok:new" {
		t.Fatalf("propose on the restored node: %v %v", v, err)
	}
	for _, k := range []string{"r/test/old0", "r/test/old49", "r/test/new"} {
		if _, err := getKey(m.db, k); err != nil {
			t.Fatalf("%s: %v", k, err)
		}
	}

	// A node joining the restored one gets the state (a snapshot) and the new entries.
	j := startMember(t, "r2", func(c *Config) { c.Join = []string{m.addr} })
	checkFor(t, 20e9, 50e6, func() error {
		for _, k := range []string{"r/test/old0", "r/test/old49", "r/test/new"} {
			if _, err := getKey(j.db, k); err != nil {
				return fmt.Errorf("joiner lacks %s: %w", k, err)
			}
		}
		return nil
	})
	if v, err := j.Propose(context.Background(), cmdPut, []byte("later=1")); err != nil || v != "ok:later" {
		t.Fatalf("propose through the joiner: %v %v", v, err)
	}
	j.stop(t)

	// A restart keeps the log where it was (no second bootstrap).
	m.stop(t)
	m.restart(t)
	j.restart(t) // the cluster has two voters now
	waitReady(t, m.Raft)
	if _, err := getKey(m.db, "r/test/later"); err != nil {
		t.Fatalf("after restart: %v", err)
	}
	if v, err := m.Propose(context.Background(), cmdPut, []byte("after=1")); err != nil || v != "ok:after" {
		t.Fatalf("propose after restart: %v %v", v, err)
	}
}

// failingSnapshots is a snapshot store whose Create fails (a full disk).
type failingSnapshots struct{ raft.SnapshotStore }

func (failingSnapshots) Create(raft.SnapshotVersion, uint64, uint64, raft.Configuration, uint64, raft.Transport) (raft.SnapshotSink, error) {
	return nil, errors.New("no space left on device")
}

// A first start on a restored state that fails half way (the snapshot
// cannot be written: a full disk) leaves no Raft state behind, so the
// next start bootstraps again. Before, the term was saved first, and a
// Raft state of a term alone (no log, no snapshot, no configuration)
// counted as existing: the node never bootstrapped, never led, and
// waited for a cluster forever.
func TestFailedBootstrapOnRestoredStateCanBeRetried(t *testing.T) {
	src := startNode(t, nodeOpts{bootstrap: true})
	waitReady(t, src.Raft)
	for i := range 5 {
		if _, err := src.Propose(context.Background(), cmdPut, fmt.Appendf(nil, "old%d=v%d", i, i)); err != nil {
			t.Fatal(err)
		}
	}
	_, applied, rc, err := src.f.OpenState()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	db := openDB(t, filepath.Join(dir, "badger"))
	f := fsm.New(db, testLogger(t))
	if err := f.Restore(rc); err != nil {
		t.Fatal(err)
	}
	src.stop(t)

	// The first start's bootstrap, with the snapshot store failing.
	walDir := filepath.Join(dir, "raft", "wal")
	if err := os.MkdirAll(walDir, 0o750); err != nil {
		t.Fatal(err)
	}
	meta := &metadb.BoltMetaDB{}
	w, err := wal.Open(walDir, wal.WithMetaStore(meta))
	if err != nil {
		t.Fatal(err)
	}
	files, err := raft.NewFileSnapshotStoreWithLogger(filepath.Join(dir, "raft"), snapshotsRetained, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	addr, trans := raft.NewInmemTransport("")
	self := raft.Server{Suffrage: raft.Voter, ID: "r1", Address: addr}
	if err := bootstrapAtState(f, applied, w, failingSnapshots{files}, trans, self); err == nil {
		t.Fatal("bootstrap with a failing snapshot store succeeded")
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	_ = meta.Close()
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	// The next start (disk freed) bootstraps and leads.
	m := &member{name: "r1", dir: dir}
	m.start(t, "127.0.0.1:0", func(c *Config) { c.Bootstrap = true })
	waitReady(t, m.Raft)
	if v, err := m.Propose(context.Background(), cmdPut, []byte("new=1")); err != nil || v != "ok:new" {
		t.Fatalf("propose on the restored node: %v %v", v, err)
	}
	if _, err := getKey(m.db, "r/test/old4"); err != nil {
		t.Fatalf("restored state: %v", err)
	}
}
