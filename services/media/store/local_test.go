package store_test

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgechat/edgechat/services/media/store"
	"github.com/edgechat/edgechat/services/media/store/storetest"
)

func newLocal(t *testing.T) *store.Local {
	t.Helper()
	l, err := store.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func TestLocalConformance(t *testing.T) {
	storetest.Conformance(t, func(t *testing.T) store.Store { return newLocal(t) })
}

// A Put that fails (or a crash) leaves at most a dot-named temporary file,
// which List, Stat and Get never see; Delete and Move leave no empty
// directories behind.
func TestLocalLeavesNoLitter(t *testing.T) {
	l := newLocal(t)
	c := context.Background()
	storetest.Put(t, l, store.TierRaw, "a/b/c", []byte("x"), "")
	if err := os.WriteFile(filepath.Join(l.Dir(store.TierRaw), "a", "b", ".tmp-crashed"), []byte("junk"), 0o644); err != nil {
		t.Fatal(err)
	}
	var keys []string
	if err := l.List(c, store.TierRaw, "", func(o store.Object) bool { keys = append(keys, o.Key); return true }); err != nil {
		t.Fatal(err)
	}
	if strings.Join(keys, " ") != "a/b/c" {
		t.Fatalf("List = %q", keys)
	}
	os.Remove(filepath.Join(l.Dir(store.TierRaw), "a", "b", ".tmp-crashed"))

	if err := l.Move(c, store.TierRaw, store.TierCold, "a/b/c"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(l.Dir(store.TierRaw), "a")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Move left the source's directories: %v", err)
	}
	if err := l.Delete(c, store.TierCold, "a/b/c"); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(l.Dir(store.TierCold))
	if len(entries) != 0 {
		t.Fatalf("Delete left %v in the cold directory", entries)
	}
	// The tier directories themselves stay.
	for _, tier := range store.AllTiers() {
		if _, err := os.Stat(l.Dir(tier)); err != nil {
			t.Fatal(err)
		}
	}
}

// Move keeps the modification time: the sweep to cold must not make media
// look freshly written.
func TestLocalMoveKeepsModTime(t *testing.T) {
	l := newLocal(t)
	c := context.Background()
	obj := storetest.Put(t, l, store.TierProcessed, "k", []byte("x"), "")
	old := obj.ModTime.Add(-48 * 3600e9)
	if err := os.Chtimes(filepath.Join(l.Dir(store.TierProcessed), "k"), old, old); err != nil {
		t.Fatal(err)
	}
	if err := l.Move(c, store.TierProcessed, store.TierCold, "k"); err != nil {
		t.Fatal(err)
	}
	st, err := l.Stat(c, store.TierCold, "k")
	if err != nil {
		t.Fatal(err)
	}
	if !st.ModTime.Equal(old) {
		t.Fatalf("ModTime after Move %v, want %v", st.ModTime, old)
	}
}

// A key cannot be both an object and a prefix of other keys locally.
func TestLocalObjectAndPrefixConflict(t *testing.T) {
	l := newLocal(t)
	storetest.Put(t, l, store.TierRaw, "a", []byte("x"), "")
	if _, err := l.Put(context.Background(), store.TierRaw, "a/b", strings.NewReader("y"), 1, ""); err == nil {
		t.Fatal("Put below an object: no error")
	}
	if got, _ := storetest.ReadAll(t, l, store.TierRaw, "a", 0, -1); string(got) != "x" {
		t.Fatalf("a = %q", got)
	}
}

// A file that is not an object (an operator's copy, a truncated file) is
// reported, not served as media.
func TestLocalCorruptFile(t *testing.T) {
	l := newLocal(t)
	c := context.Background()
	obj := storetest.Put(t, l, store.TierRaw, "k", []byte("0123456789"), "")
	p := filepath.Join(l.Dir(store.TierRaw), "k")
	if err := os.Truncate(p, 60); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Stat(c, store.TierRaw, "k"); err == nil || errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Stat of a truncated object: %v", err)
	}
	if err := os.WriteFile(p, []byte("just a jpeg"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := l.Get(c, store.TierRaw, "k", 0, -1); err == nil {
		t.Fatal("Get of a foreign file: no error")
	}
	_ = obj
}

func TestLocalCanceledPut(t *testing.T) {
	l := newLocal(t)
	c, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := l.Put(c, store.TierRaw, "k", storetest.NewGenReader(1<<20, 1), 1<<20, ""); !errors.Is(err, context.Canceled) {
		t.Fatalf("Put with a canceled context: %v", err)
	}
	entries, _ := os.ReadDir(l.Dir(store.TierRaw))
	if len(entries) != 0 {
		t.Fatalf("a canceled Put left %v", entries)
	}
}

// The heap watch of the streaming test does see an object held in memory
// (so its "0 MiB" for the stores means something).
func TestHeapWatchSeesBuffering(t *testing.T) {
	w := storetest.WatchHeap()
	b, err := io.ReadAll(storetest.NewGenReader(30<<20, 7))
	grew := w.Stop()
	if err != nil || len(b) != 30<<20 {
		t.Fatal(len(b), err)
	}
	if grew < 25<<20 {
		t.Fatalf("holding 30 MiB, the watch saw the heap grow by %d bytes", grew)
	}
}
