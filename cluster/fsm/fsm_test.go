package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"reflect"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/dgraph-io/badger/v4"
	"github.com/hashicorp/raft"

	"github.com/edgechat/edgechat/internal/testutil"
)

func openDB(t testing.TB) *badger.DB {
	t.Helper()
	db, err := badger.Open(badger.DefaultOptions(t.TempDir()).WithLogger(nil).
		WithMemTableSize(8 << 20).WithNumMemtables(2).
		WithBlockCacheSize(8 << 20).WithIndexCacheSize(8 << 20))
	if err != nil {
		t.Fatalf("open badger: %v", err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

const (
	cmdPut byte = 0x30 // payload "key=value": sets r/t/key
)

// newFSM returns an FSM with a put handler that counts its calls.
func newFSM(t testing.TB) (*FSM, *atomic.Int64) {
	f := New(openDB(t), testutil.QuietLogger())
	var calls atomic.Int64
	f.Register(cmdPut, func(tx *badger.Txn, at Position, p []byte) (any, error) {
		calls.Add(1)
		k, v, ok := bytes.Cut(p, []byte("="))
		if !ok {
			return nil, errors.New("no =")
		}
		return at.Seq(), tx.Set(append([]byte("r/t/"), k...), v)
	})
	return f, &calls
}

func entry(index uint64, cmds ...Command) *raft.Log {
	return &raft.Log{Index: index, Term: 1, Type: raft.LogCommand, Data: EncodeBatch(cmds)}
}

func put(k, v string) Command { return Command{Type: cmdPut, Payload: []byte(k + "=" + v)} }

// dump returns every key under prefix with its value.
func dump(t testing.TB, db *badger.DB, prefix string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := db.View(func(tx *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = []byte(prefix)
		it := tx.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			out[string(it.Item().KeyCopy(nil))] = string(v)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func applied(t testing.TB, f *FSM) uint64 {
	t.Helper()
	idx, err := f.AppliedIndex()
	if err != nil {
		t.Fatal(err)
	}
	return idx
}

func TestBatchRoundTrip(t *testing.T) {
	big := bytes.Repeat([]byte{0xAB}, 70_000)
	for name, cmds := range map[string][]Command{
		"empty":   {},
		"one":     {{Type: 1, Payload: []byte("n1")}},
		"mixed":   {{Type: 0x30, Payload: []byte(`{"body":"hi"}`)}, {Type: 0x00, Payload: nil}, {Type: 0xFF, Payload: big}},
		"hundred": hundred(),
	} {
		got, err := DecodeBatch(EncodeBatch(cmds))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(got) != len(cmds) {
			t.Fatalf("%s: %d commands, want %d", name, len(got), len(cmds))
		}
		for i := range cmds {
			if got[i].Type != cmds[i].Type || !bytes.Equal(got[i].Payload, cmds[i].Payload) {
				t.Fatalf("%s: command %d = %+v, want %+v", name, i, got[i], cmds[i])
			}
		}
	}
}

func hundred() []Command {
	var cmds []Command
	for i := range 100 {
		cmds = append(cmds, Command{Type: byte(i), Payload: fmt.Appendf(nil, "payload %d", i)})
	}
	return cmds
}

func TestDecodeBatchRejectsMalformed(t *testing.T) {
	valid := EncodeBatch([]Command{{Type: 1, Payload: []byte("abc")}})
	for name, b := range map[string][]byte{
		"nil":         nil,
		"bad version": append([]byte{2}, valid[1:]...),
		"no count":    {1},
		"truncated":   valid[:len(valid)-1],
		"trailing":    append(append([]byte{}, valid...), 0),
		"count>1<<16": {1, 0x81, 0x80, 0x04},
		"short count": {1, 3, 1, 0},
	} {
		if _, err := DecodeBatch(b); !errors.Is(err, ErrBadEntry) {
			t.Errorf("%s: err = %v, want ErrBadEntry", name, err)
		}
	}
}

// FuzzDecodeBatch: no input panics, and whatever decodes re-encodes to
// something that decodes to the same commands.
func FuzzDecodeBatch(f *testing.F) {
	f.Add(EncodeBatch(hundred()[:3]))
	f.Fuzz(func(t *testing.T, b []byte) {
		cmds, err := DecodeBatch(b)
		if err != nil {
			if !errors.Is(err, ErrBadEntry) {
				t.Fatalf("error not ErrBadEntry: %v", err)
			}
			return
		}
		total := 0
		for _, c := range cmds {
			total += len(c.Payload)
		}
		if total > len(b) {
			t.Fatalf("decoded %d payload bytes from %d", total, len(b))
		}
		again, err := DecodeBatch(EncodeBatch(cmds))
		if err != nil {
			t.Fatalf("re-encoded batch does not decode: %v", err)
		}
		if len(again) != len(cmds) {
			t.Fatalf("re-encode changed the count")
		}
		for i := range cmds {
			if again[i].Type != cmds[i].Type || !bytes.Equal(again[i].Payload, cmds[i].Payload) {
				t.Fatalf("re-encode changed command %d", i)
			}
		}
	})
}

func TestApplySkipsUnknownCommands(t *testing.T) {
	f, _ := newFSM(t)
	res := f.Apply(entry(7, put("a", "1"), Command{Type: 0xEE, Payload: []byte("from the future")}, put("b", "2")))
	results, ok := res.([]Result)
	if !ok || len(results) != 3 {
		t.Fatalf("Apply returned %#v", res)
	}
	if !errors.Is(results[1].Err, ErrUnknownCommand) {
		t.Errorf("unknown command result: %+v", results[1])
	}
	for _, i := range []int{0, 2} {
		if results[i].Err != nil {
			t.Errorf("command %d failed: %v", i, results[i].Err)
		}
	}
	// The handler sees each command's own position.
	if results[2].Value != (Position{Index: 7, Sub: 2}).Seq() {
		t.Errorf("position of command 2: %v", results[2].Value)
	}
	want := map[string]string{"r/t/a": "1", "r/t/b": "2"}
	if got := dump(t, f.DB(), "r/t/"); !reflect.DeepEqual(got, want) {
		t.Errorf("state = %v, want %v", got, want)
	}
	if applied(t, f) != 7 {
		t.Errorf("applied index = %d, want 7", applied(t, f))
	}
}

func TestApplyIgnoresReplays(t *testing.T) {
	f, calls := newFSM(t)
	f.Apply(entry(5, put("a", "1")))
	before := dump(t, f.DB(), "r/")
	calls.Store(0)
	for _, idx := range []uint64{5, 4, 1} {
		res := f.Apply(entry(idx, put("a", "changed"), put("c", "new")))
		results := res.([]Result)
		for i, r := range results {
			if !errors.Is(r.Err, ErrReplayed) {
				t.Errorf("index %d command %d: %+v, want ErrReplayed", idx, i, r)
			}
		}
	}
	if calls.Load() != 0 {
		t.Errorf("handler ran %d times on replays", calls.Load())
	}
	if after := dump(t, f.DB(), "r/"); !reflect.DeepEqual(after, before) {
		t.Errorf("replay changed state: %v -> %v", before, after)
	}
	if applied(t, f) != 5 {
		t.Errorf("applied index moved to %d", applied(t, f))
	}
	// Non-command entries and malformed ones change nothing either.
	f.Apply(&raft.Log{Index: 9, Type: raft.LogConfiguration})
	if res := f.Apply(&raft.Log{Index: 10, Type: raft.LogCommand, Data: []byte{9, 9}}); !errors.Is(res.([]Result)[0].Err, ErrBadEntry) {
		t.Errorf("malformed entry result: %#v", res)
	}
	if after := dump(t, f.DB(), "r/"); !reflect.DeepEqual(after, before) {
		t.Errorf("bad entries changed state: %v -> %v", before, after)
	}
}

// snapshotOf is f's full snapshot, as a leader sends it (OpenState).
func snapshotOf(t testing.TB, f *FSM) []byte {
	t.Helper()
	size, _, rc, err := f.OpenState()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(b)) != size {
		t.Fatalf("OpenState said %d bytes, sent %d", size, len(b))
	}
	return b
}

func TestSnapshotRestoreRoundTrip(t *testing.T) {
	src, _ := newFSM(t)
	var cmds []Command
	for i := range 2000 { // enough to cross the 32 KiB write chunks
		cmds = append(cmds, put(fmt.Sprintf("k%04d", i), fmt.Sprintf("value %d with some padding to grow", i)))
	}
	src.Apply(entry(3, cmds[:1000]...))
	src.Apply(entry(4, cmds[1000:]...))
	src.Apply(entry(6, Command{Type: cmdPut, Payload: []byte("empty=")}))
	// Local keys are not replicated and must stay out of snapshots.
	if err := src.DB().Update(func(tx *badger.Txn) error { return tx.Set([]byte("l/local"), []byte("x")) }); err != nil {
		t.Fatal(err)
	}
	data := snapshotOf(t, src)

	dst, _ := newFSM(t)
	// Stale replicated junk from an older life is replaced, local keys stay.
	if err := dst.DB().Update(func(tx *badger.Txn) error {
		if err := tx.Set([]byte("r/t/stale"), []byte("x")); err != nil {
			return err
		}
		return tx.Set([]byte("l/mine"), []byte("y"))
	}); err != nil {
		t.Fatal(err)
	}
	var hooks atomic.Int32
	dst.OnRestore(func() { hooks.Add(1) })
	dst.OnRestore(func() { hooks.Add(10) })
	if err := dst.Restore(io.NopCloser(bytes.NewReader(data))); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if hooks.Load() != 11 {
		t.Errorf("OnRestore hooks: %d, want both (11)", hooks.Load())
	}
	want, got := dump(t, src.DB(), "r/"), dump(t, dst.DB(), "r/")
	if !reflect.DeepEqual(got, want) {
		t.Errorf("restored %d keys, want %d (equal: %v)", len(got), len(want), reflect.DeepEqual(got, want))
	}
	if got["r/t/empty"] != "" || len(got) != 2002 { // 2001 puts + applied index
		t.Errorf("restored %d keys", len(got))
	}
	if applied(t, dst) != 6 {
		t.Errorf("applied index = %d, want 6", applied(t, dst))
	}
	if l := dump(t, dst.DB(), "l/"); !reflect.DeepEqual(l, map[string]string{"l/mine": "y"}) {
		t.Errorf("local keys after restore: %v", l)
	}
	// The restored FSM continues from the snapshot: replays are skipped.
	if res := dst.Apply(entry(6, put("k0000", "changed"))).([]Result); !errors.Is(res[0].Err, ErrReplayed) {
		t.Errorf("replay after restore: %+v", res)
	}
	if res := dst.Apply(entry(7, put("k0000", "changed"))).([]Result); res[0].Err != nil {
		t.Errorf("next entry after restore: %+v", res)
	}
}

func TestRestoreOntoNewerStateIsNoop(t *testing.T) {
	src, _ := newFSM(t)
	src.Apply(entry(3, put("a", "old")))
	data := snapshotOf(t, src)

	dst, _ := newFSM(t)
	dst.Apply(entry(3, put("a", "mine")))
	dst.Apply(entry(8, put("b", "newer")))
	before := dump(t, dst.DB(), "r/")
	var hooks atomic.Int32
	dst.OnRestore(func() { hooks.Add(1) })
	if err := dst.Restore(io.NopCloser(bytes.NewReader(data))); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if after := dump(t, dst.DB(), "r/"); !reflect.DeepEqual(after, before) {
		t.Errorf("restore of an older snapshot changed state: %v -> %v", before, after)
	}
	if hooks.Load() != 0 {
		t.Errorf("OnRestore ran for a skipped restore")
	}
	if applied(t, dst) != 8 {
		t.Errorf("applied index = %d", applied(t, dst))
	}
}

func TestRestoreRejectsBadHeader(t *testing.T) {
	f, _ := newFSM(t)
	f.Apply(entry(2, put("a", "1")))
	before := dump(t, f.DB(), "r/")
	for name, data := range map[string][]byte{
		"empty":     nil,
		"bad magic": []byte("NOTASNAP\x00\x00\x00\x00\x00\x00\x00\x09\x00"),
		"no index":  []byte(snapMagic + "\x00\x00"),
	} {
		if err := f.Restore(io.NopCloser(bytes.NewReader(data))); !errors.Is(err, ErrBadEntry) {
			t.Errorf("%s: %v, want ErrBadEntry", name, err)
		}
	}
	if after := dump(t, f.DB(), "r/"); !reflect.DeepEqual(after, before) {
		t.Errorf("bad snapshot changed state")
	}
}

// A full snapshot (what a follower that fell behind gets) is staged next
// to the database while it is checked, not in the system's temporary
// directory: the state can be far larger than /tmp (the Kubernetes
// manifest gives it a 256 MiB emptyDir, and a pod that outgrows it is
// evicted), or there may be none at all (a read-only root filesystem).
func TestRestoreStagesNextToTheDatabase(t *testing.T) {
	src, _ := newFSM(t)
	src.Apply(entry(3, put("a", "1"), put("b", "2")))
	data := snapshotOf(t, src)

	t.Setenv("TMPDIR", filepath.Join(t.TempDir(), "missing"))
	dst, _ := newFSM(t)
	if err := dst.Restore(io.NopCloser(bytes.NewReader(data))); err != nil {
		t.Fatalf("Restore without a usable temporary directory: %v", err)
	}
	if got := dump(t, dst.DB(), "r/t/"); !reflect.DeepEqual(got, map[string]string{"r/t/a": "1", "r/t/b": "2"}) {
		t.Fatalf("restored %v", got)
	}
	left, err := filepath.Glob(filepath.Join(dst.DB().Opts().Dir, stagingPattern))
	if err != nil || len(left) != 0 {
		t.Fatalf("staging files left: %v %v", left, err)
	}
}

// DeletePrefixes deletes what is under each prefix, the transaction's own
// writes included, and nothing else.
func TestDeletePrefixesDeletesOnlyUnderThePrefixes(t *testing.T) {
	db := openDB(t)
	for _, k := range []string{"a/1/x", "a/1/y", "a/10/x", "a/2/x", "a/3/x", "b/1/x", "a/1"} {
		if err := db.Update(func(tx *badger.Txn) error { return tx.Set([]byte(k), nil) }); err != nil {
			t.Fatal(err)
		}
	}
	err := db.Update(func(tx *badger.Txn) error {
		if err := tx.Set([]byte("a/3/new"), nil); err != nil {
			return err
		}
		return DeletePrefixes(tx, [][]byte{[]byte("a/3/"), []byte("a/1/"), []byte("b/9/")})
	})
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	_ = db.View(func(tx *badger.Txn) error {
		it := tx.NewIterator(badger.IteratorOptions{})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			left = append(left, string(it.Item().Key()))
		}
		return nil
	})
	if want := []string{"a/1", "a/10/x", "a/2/x", "b/1/x"}; !slices.Equal(left, want) {
		t.Fatalf("left %q, want %q", left, want)
	}
}
