package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"testing"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/internal/badgeropts"
	"github.com/edgechat/edgechat/internal/testutil"
)

// The snapshot barrier on a node's database, whose memtables have no
// write-ahead file (internal/badgeropts): a process that persisted a
// reference snapshot at X and then crashed must find its database at X
// or later when it starts again, or Raft (which dropped the log up to X)
// could never give it those entries back. The crash is real: the test
// binary runs itself as a child that applies, snapshots, applies more and
// exits without closing the database.

const barrierChildEnv = "EDGECHAT_FSM_BARRIER_CHILD_DIR"

const (
	barrierBefore = 300 // entries applied before the snapshot
	barrierAfter  = 200 // entries applied after it, then the crash
)

func nodeFSM(t testing.TB, dir string) *FSM {
	db, err := badger.Open(badgeropts.Node(dir).WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	f := New(db, testutil.QuietLogger())
	f.Register(cmdPut, func(tx *badger.Txn, _ Position, p []byte) (any, error) {
		k, v, ok := bytes.Cut(p, []byte("="))
		if !ok {
			return nil, errors.New("no =")
		}
		return nil, tx.Set(append([]byte("r/t/"), k...), v)
	})
	return f
}

// TestBarrierCrashChild is the child process of
// TestReferenceSnapshotSurvivesACrashWithoutMemtableFiles.
func TestBarrierCrashChild(t *testing.T) {
	dir := os.Getenv(barrierChildEnv)
	if dir == "" {
		t.Skip("run by TestReferenceSnapshotSurvivesACrashWithoutMemtableFiles")
	}
	f := nodeFSM(t, dir)
	for i := uint64(1); i <= barrierBefore; i++ {
		f.Apply(entry(i, put(fmt.Sprint(i), "v")))
	}
	ref := refSnapshotOf(t, f)
	if idx, ok := IsReference(ref); !ok || idx != barrierBefore {
		fmt.Fprintf(os.Stderr, "snapshot at %d (reference %v)\n", idx, ok)
		os.Exit(3)
	}
	for i := uint64(barrierBefore + 1); i <= barrierBefore+barrierAfter; i++ {
		f.Apply(entry(i, put(fmt.Sprint(i), "v")))
	}
	os.Exit(0) // the crash: the database is not closed
}

func TestReferenceSnapshotSurvivesACrashWithoutMemtableFiles(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a child process")
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestBarrierCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), barrierChildEnv+"="+dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	f := nodeFSM(t, dir)
	defer f.DB().Close()
	got := applied(t, f)
	// Without the write-ahead file the entries after the snapshot were in
	// memory only (the memtable is far from full): they are gone, and
	// the log would give them back. With it they would all be there,
	// and this test would not be testing the barrier.
	if got != barrierBefore {
		t.Fatalf("applied index %d after the crash, want %d (the snapshot's)", got, barrierBefore)
	}
	state := dump(t, f.DB(), "r/t/")
	for i := 1; i <= barrierBefore; i++ {
		if state[fmt.Sprintf("r/t/%d", i)] != "v" {
			t.Fatalf("entry %d, before the snapshot, lost in the crash", i)
		}
	}
	if len(state) != barrierBefore {
		t.Fatalf("%d keys after the crash, want the %d of the entries up to the snapshot", len(state), barrierBefore)
	}
	// The replay: the log's entries after the snapshot apply again.
	for i := uint64(barrierBefore + 1); i <= barrierBefore+barrierAfter; i++ {
		f.Apply(entry(i, put(fmt.Sprint(i), "v")))
	}
	if got := applied(t, f); got != barrierBefore+barrierAfter {
		t.Fatalf("applied %d after the replay", got)
	}
}
