package node

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"

	"github.com/edgechat/edgechat/internal/badgeropts"
)

// scriptedGC answers RunValueLogGC with the next of its results and
// reports each call on calls.
type scriptedGC struct {
	results chan error
	calls   chan float64
}

func (s *scriptedGC) RunValueLogGC(ratio float64) error {
	s.calls <- ratio
	return <-s.results
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (w *syncBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *syncBuffer) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

func TestValueLogGC(t *testing.T) {
	db := &scriptedGC{results: make(chan error), calls: make(chan float64)}
	var logs syncBuffer
	g := newValueLogGC(db, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	g.every = time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()

	answer := func(err error) {
		t.Helper()
		select {
		case ratio := <-db.calls:
			if ratio != 0.5 {
				t.Errorf("discard ratio %v, want 0.5", ratio)
			}
		case err := <-done:
			t.Fatalf("Run returned %v while it should be collecting", err)
		}
		db.results <- err
	}
	// A pass repeats while files get rewritten and ends at ErrNoRewrite.
	answer(nil)
	answer(nil)
	answer(badger.ErrNoRewrite)
	// A failure is logged and the loop carries on to the next tick.
	answer(errors.New("disk full"))
	answer(badger.ErrRejected)
	answer(badger.ErrNoRewrite)
	if l := logs.String(); !strings.Contains(l, "disk full") || !strings.Contains(l, "level=WARN") {
		t.Errorf("failure not logged as a warning:\n%s", l)
	}
	if l := logs.String(); !strings.Contains(l, "files_rewritten=2") {
		t.Errorf("the pass that rewrote two files is not logged:\n%s", l)
	}
	if strings.Contains(strings.ToLower(logs.String()), "rejected") {
		t.Errorf("ErrRejected (GC busy or closing) logged as a failure:\n%s", logs.String())
	}

	// Cancelling stops it, also while a call is waiting for an answer.
	<-db.calls
	cancel()
	db.results <- nil
	if err := <-done; err != nil {
		t.Fatalf("Run after cancel = %v, want nil", err)
	}
}

// TestBadgerSkipsConflictDetection: the node's database does not detect
// conflicts (internal/badgeropts says why that is safe): a read-write
// transaction commits although a key it read was overwritten since it
// started, which Badger's default refuses with ErrConflict.
func TestBadgerSkipsConflictDetection(t *testing.T) {
	db, err := openBadger(t.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	key := []byte("r/test/k")
	tx := db.NewTransaction(true)
	defer tx.Discard()
	if _, err := tx.Get(key); !errors.Is(err, badger.ErrKeyNotFound) {
		t.Fatalf("Get = %v, want not found", err)
	}
	if err := db.Update(func(o *badger.Txn) error { return o.Set(key, []byte("other")) }); err != nil {
		t.Fatal(err)
	}
	if err := tx.Set([]byte("r/test/other"), []byte("v")); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatalf("Commit = %v, want nil (no conflict detection)", err)
	}
}

// TestBadgerOpensWithNodeOptions: the node's database is opened with
// internal/badgeropts' settings (what the archive's benchmarks measure),
// not Badger's defaults.
func TestBadgerOpensWithNodeOptions(t *testing.T) {
	db, err := openBadger(t.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	o := db.Opts()
	if o.BlockSize != badgeropts.BlockSize || o.NumLevelZeroTables != badgeropts.LevelZeroTables ||
		o.NumLevelZeroTablesStall != 2*badgeropts.LevelZeroTables || o.Compression != options.ZSTD ||
		o.ValueThreshold != badgeropts.ValueThreshold || o.DetectConflicts || !o.NoMemTableWAL {
		t.Fatalf("opened with block %d, level 0 %d/%d, compression %v, value threshold %d, conflicts %v, memtable WAL off %v",
			o.BlockSize, o.NumLevelZeroTables, o.NumLevelZeroTablesStall, o.Compression, o.ValueThreshold, o.DetectConflicts, o.NoMemTableWAL)
	}
}
