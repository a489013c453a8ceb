package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/internal/testutil"
)

// refSnapshotOf persists f's own snapshot (a reference) and returns it.
func refSnapshotOf(t testing.TB, f *FSM) []byte {
	t.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	var sink testutil.SnapshotSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	if !sink.Closed || sink.Canceled {
		t.Fatalf("sink closed=%v canceled=%v", sink.Closed, sink.Canceled)
	}
	return sink.Bytes()
}

// A node's own snapshot is a 16-byte reference to its database at the
// applied index, not a copy of the state; restoring it on the same
// database keeps the state (including what was applied after it) and
// drops no cache.
func TestReferenceSnapshotRestoresLocally(t *testing.T) {
	f, _ := newFSM(t)
	for i := uint64(1); i <= 50; i++ {
		f.Apply(entry(i, put(fmt.Sprintf("k%d", i), "v")))
	}
	ref := refSnapshotOf(t, f)
	if idx, ok := IsReference(ref); !ok || idx != 50 || len(ref) != 16 {
		t.Fatalf("snapshot %q: reference %v at %d; want a 16-byte reference at 50", ref, ok, idx)
	}
	f.Apply(entry(51, put("after", "v")))
	before := dump(t, f.DB(), "r/")
	var hooks atomic.Int32
	f.OnRestore(func() { hooks.Add(1) })
	if err := f.Restore(io.NopCloser(bytes.NewReader(ref))); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if after := dump(t, f.DB(), "r/"); !reflect.DeepEqual(after, before) {
		t.Errorf("restoring the node's own reference changed its state")
	}
	if hooks.Load() != 0 {
		t.Errorf("OnRestore ran for a reference")
	}
	if got := applied(t, f); got != 51 {
		t.Errorf("applied = %d, want 51", got)
	}
}

// A reference to state the database does not have (it was deleted or
// replaced, or the reference came from another node) is refused rather
// than taken as restored: Raft would otherwise skip the entries up to it.
func TestReferenceSnapshotRefusedWhenStateBehind(t *testing.T) {
	src, _ := newFSM(t)
	for i := uint64(1); i <= 20; i++ {
		src.Apply(entry(i, put("k", fmt.Sprint(i))))
	}
	ref := refSnapshotOf(t, src)

	behind, _ := newFSM(t)
	behind.Apply(entry(3, put("k", "3")))
	fresh, _ := newFSM(t)
	for name, f := range map[string]*FSM{"behind": behind, "empty": fresh} {
		before := dump(t, f.DB(), "r/")
		if err := f.Restore(io.NopCloser(bytes.NewReader(ref))); !errors.Is(err, ErrStateLost) {
			t.Errorf("%s: Restore = %v, want ErrStateLost", name, err)
		}
		if after := dump(t, f.DB(), "r/"); !reflect.DeepEqual(after, before) {
			t.Errorf("%s: a refused reference changed state", name)
		}
	}
	if err := fresh.Restore(io.NopCloser(bytes.NewReader(ref[:12]))); !errors.Is(err, ErrBadEntry) {
		t.Errorf("truncated reference: %v, want ErrBadEntry", err)
	}
}

// OpenState streams the state of one read transaction: entries applied
// while the stream is read do not leak into it, the size announced is
// the size sent, and the stream restores into an empty FSM with the
// applied index it names.
func TestOpenStateIsOnePointInTime(t *testing.T) {
	src, _ := newFSM(t)
	var cmds []Command
	for i := range 3000 { // several 32 KiB chunks
		cmds = append(cmds, put(fmt.Sprintf("k%04d", i), fmt.Sprintf("value %d with some padding", i)))
	}
	src.Apply(entry(5, cmds...))
	want := dump(t, src.DB(), "r/")
	size, idx, rc, err := src.OpenState()
	if err != nil {
		t.Fatal(err)
	}
	if idx != 5 {
		t.Errorf("OpenState applied = %d, want 5", idx)
	}
	src.Apply(entry(6, put("k0000", "changed"), put("late", "x")))
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	if err := rc.Close(); err != nil {
		t.Fatal(err)
	}
	if int64(len(b)) != size {
		t.Fatalf("announced %d bytes, sent %d", size, len(b))
	}
	dst, _ := newFSM(t)
	if err := dst.Restore(io.NopCloser(bytes.NewReader(b))); err != nil {
		t.Fatal(err)
	}
	if got := dump(t, dst.DB(), "r/"); !reflect.DeepEqual(got, want) {
		t.Errorf("restored state differs from the state at OpenState (%d keys, want %d)", len(got), len(want))
	}

	// A reader closed early releases the transaction without blocking.
	_, _, rc2, err := src.OpenState()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rc2.Read(make([]byte, 10)); err != nil {
		t.Fatal(err)
	}
	if err := rc2.Close(); err != nil {
		t.Fatal(err)
	}
}

// The durability barrier finds Badger's memtable write-ahead files by
// name: if a Badger upgrade renamed them, the barrier would sync nothing
// and reference snapshots would not be safe, so this fails first.
func TestSyncStateFindsMemtableFiles(t *testing.T) {
	f, _ := newFSM(t)
	f.Apply(entry(1, put("a", "1")))
	n, err := syncDirFiles(f.DB().Opts().Dir)
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Fatalf("no memtable file synced in %s", f.DB().Opts().Dir)
	}
	if err := f.syncState(); err != nil {
		t.Fatal(err)
	}
}

// The barrier runs before the reference is written, and a failed barrier
// cancels the snapshot: Raft then keeps its log (it compacts only after a
// snapshot's sink closed without error).
func TestReferenceWrittenOnlyAfterTheBarrier(t *testing.T) {
	var sink testutil.SnapshotSink
	var wroteBefore int
	ok := &refSnapshot{applied: 7, sync: func() error { wroteBefore = sink.Len(); return nil }}
	if err := ok.Persist(&sink); err != nil || !sink.Closed || sink.Canceled {
		t.Fatalf("Persist: %v closed=%v canceled=%v", err, sink.Closed, sink.Canceled)
	}
	if wroteBefore != 0 {
		t.Errorf("%d bytes written before the barrier ran", wroteBefore)
	}
	if idx, isRef := IsReference(sink.Bytes()); !isRef || idx != 7 {
		t.Errorf("wrote %q", sink.Bytes())
	}

	var failed testutil.SnapshotSink
	boom := errors.New("disk gone")
	bad := &refSnapshot{applied: 7, sync: func() error { return boom }}
	if err := bad.Persist(&failed); !errors.Is(err, boom) {
		t.Fatalf("Persist with a failing barrier: %v", err)
	}
	if !failed.Canceled || failed.Closed || failed.Len() != 0 {
		t.Errorf("failed barrier: canceled=%v closed=%v %d bytes; want cancelled and empty", failed.Canceled, failed.Closed, failed.Len())
	}
}

// The barrier writes the files back before DB.Sync (which holds Badger's
// write lock while it msyncs, stalling every apply), and still syncs
// them after it, as the durability argument needs.
func TestBarrierWritesBackBeforeBadgerSync(t *testing.T) {
	var steps []string
	files := func(dir string) (int, error) { steps = append(steps, "files "+dir); return 1, nil }
	dbSync := func() error { steps = append(steps, "DB.Sync"); return nil }
	opts := badger.DefaultOptions("/db").WithValueDir("/vlog")
	if err := syncDatabase(opts, dbSync, files); err != nil {
		t.Fatal(err)
	}
	want := []string{"files /db", "files /vlog", "DB.Sync", "files /db", "files /vlog"}
	if !slices.Equal(steps, want) {
		t.Errorf("barrier steps %q, want %q", steps, want)
	}

	steps = nil
	boom := errors.New("disk gone")
	if err := syncDatabase(opts, func() error { return boom }, files); !errors.Is(err, boom) {
		t.Fatalf("failing DB.Sync: %v", err)
	}
	if err := syncDatabase(badger.DefaultOptions("").WithInMemory(true), dbSync, files); err != nil {
		t.Fatal(err)
	}
}
