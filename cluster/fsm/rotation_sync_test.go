package fsm

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/dgraph-io/badger/v4"
)

// TestRotationSyncsTheOldMemtable writes through several memtable
// rotations of a real Badger and checks that each rotation synced the
// memtable being rotated out: a file older than the memtable Badger
// opened next. It fails if Badger stops logging its rotation line, or
// renames its memtable files, and the sync silently stops happening.
func TestRotationSyncsTheOldMemtable(t *testing.T) {
	dir := t.TempDir()
	var mu sync.Mutex
	var synced []string
	logger := NewRotationSyncLogger(nil, dir, nil)
	logger.synced = func(p string) {
		mu.Lock()
		defer mu.Unlock()
		synced = append(synced, p)
	}
	db, err := badger.Open(badger.DefaultOptions(dir).WithLogger(logger).
		WithMemTableSize(1 << 20).WithNumMemtables(2).WithValueThreshold(64 << 10))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()

	value := []byte(strings.Repeat("v", 1000))
	for i := 0; i < 5000; i++ { // ~5 MB: four or five rotations of 1 MB
		err := db.Update(func(txn *badger.Txn) error {
			return txn.Set(fmt.Appendf(nil, "k%06d", i), value)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	newest, err := newestMemtable(dir)
	if err != nil || newest == "" {
		t.Fatalf("no memtable file in %s (%v)", dir, err)
	}
	ok, failed := logger.Syncs()
	mu.Lock()
	defer mu.Unlock()
	if ok < 3 || failed != 0 || len(synced) != int(ok) {
		t.Fatalf("rotations synced %d (failed %d, files %v); want at least 3 for ~5 MB through 1 MB memtables", ok, failed, synced)
	}
	for i, p := range synced {
		if memtableNumber(t, p) >= memtableNumber(t, newest) {
			t.Errorf("sync %d was of %s, not older than the active memtable %s", i, p, newest)
		}
		if i > 0 && memtableNumber(t, p) <= memtableNumber(t, synced[i-1]) {
			t.Errorf("sync %d of %s repeats or precedes %s", i, p, synced[i-1])
		}
	}
}

func memtableNumber(t *testing.T, path string) int {
	t.Helper()
	n, err := strconv.Atoi(strings.TrimSuffix(filepath.Base(path), ".mem"))
	if err != nil {
		t.Fatalf("memtable file %s: %v", path, err)
	}
	return n
}

func TestNewestMemtableIgnoresOtherFiles(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"00002.mem", "00010.mem", "00011.vlog", "MANIFEST", "x.mem", "00003.sst"} {
		if err := writeFileForTest(filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	got, err := newestMemtable(dir)
	if err != nil || filepath.Base(got) != "00010.mem" {
		t.Fatalf("newestMemtable = %q, %v; want 00010.mem", got, err)
	}
	empty, err := newestMemtable(t.TempDir())
	if err != nil || empty != "" {
		t.Fatalf("empty dir: %q, %v", empty, err)
	}
}

func writeFileForTest(path string) error { return os.WriteFile(path, []byte("x"), 0o600) }

func TestStartWritebackOnAFileAndAMissingOne(t *testing.T) {
	path := filepath.Join(t.TempDir(), "00001.mem")
	if err := os.WriteFile(path, make([]byte, 1<<16), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := startWriteback(path); err != nil {
		t.Fatalf("startWriteback: %v", err)
	}
	if err := startWriteback(path + ".gone"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("startWriteback of a missing file: %v, want ErrNotExist", err)
	}
}
