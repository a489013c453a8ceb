package badger

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// Tests of NoMemTableWAL and FlushMemTable (PATCHES.md). A crash is a real
// one: the test binary runs itself as a child that writes and exits without
// closing the database.

const crashChildEnv = "BADGER_NOWAL_CRASH_CHILD"

func nowalKey(i int) []byte { return fmt.Appendf(nil, "key-%06d", i) }
func nowalVal(i int) []byte { return fmt.Appendf(nil, "value of %d", i) }

func nowalOptions(dir string, noWAL bool) Options {
	return DefaultOptions(dir).WithLogger(nil).WithNoMemTableWAL(noWAL)
}

func nowalSet(t testing.TB, db *DB, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		if err := db.Update(func(txn *Txn) error { return txn.Set(nowalKey(i), nowalVal(i)) }); err != nil {
			t.Fatal(err)
		}
	}
}

// nowalPresent reports which of the keys [0, n) the database holds, checking
// each value.
func nowalPresent(t *testing.T, db *DB, n int) []bool {
	t.Helper()
	got := make([]bool, n)
	err := db.View(func(txn *Txn) error {
		for i := range n {
			it, err := txn.Get(nowalKey(i))
			if err == ErrKeyNotFound {
				continue
			}
			if err != nil {
				return err
			}
			v, err := it.ValueCopy(nil)
			if err != nil {
				return err
			}
			if string(v) != string(nowalVal(i)) {
				return fmt.Errorf("key %d holds %q", i, v)
			}
			got[i] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// TestNoMemTableWALCrashChild is the child process of the crash tests.
func TestNoMemTableWALCrashChild(t *testing.T) {
	mode := os.Getenv(crashChildEnv)
	if mode == "" {
		t.Skip("run by the crash tests")
	}
	dir := os.Getenv(crashChildEnv + "_DIR")
	db, err := Open(nowalOptions(dir, mode == "nowal"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	nowalSet(t, db, 0, 100)
	if mode == "nowal" {
		if err := db.FlushMemTable(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(3)
		}
	}
	nowalSet(t, db, 100, 200)
	os.Exit(0) // a crash: no Close, so nothing is flushed on the way out
}

func runCrashChild(t *testing.T, mode, dir string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestNoMemTableWALCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+mode, crashChildEnv+"_DIR="+dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
}

// TestNoMemTableWALKeepsFlushedWritesAcrossACrash: without the write-ahead
// file, what FlushMemTable returned for survives a crash, and what was
// written after it is gone (whole transactions: nothing partial).
func TestNoMemTableWALKeepsFlushedWritesAcrossACrash(t *testing.T) {
	dir := t.TempDir()
	runCrashChild(t, "nowal", dir)
	mems, _ := filepath.Glob(filepath.Join(dir, "*"+memFileExt))
	if len(mems) != 0 {
		t.Fatalf("memtable files written without a WAL: %v", mems)
	}
	db, err := Open(nowalOptions(dir, true))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	got := nowalPresent(t, db, 200)
	for i, ok := range got {
		if want := i < 100; ok != want {
			t.Fatalf("key %d present=%v after the crash, want %v (flushed before it: the first 100)", i, ok, want)
		}
	}
}

// TestNoMemTableWALReplaysAnOlderRunsWAL: a database last written with the
// write-ahead file and not closed keeps those writes when it is opened
// without one (the memtable files are replayed, then flushed).
func TestNoMemTableWALReplaysAnOlderRunsWAL(t *testing.T) {
	dir := t.TempDir()
	runCrashChild(t, "wal", dir)
	mems, _ := filepath.Glob(filepath.Join(dir, "*"+memFileExt))
	if len(mems) == 0 {
		t.Fatal("the child left no memtable file: the test would prove nothing")
	}
	db, err := Open(nowalOptions(dir, true))
	if err != nil {
		t.Fatal(err)
	}
	for i, ok := range nowalPresent(t, db, 200) {
		if !ok {
			t.Fatalf("key %d lost: the older run's WAL was not replayed", i)
		}
	}
	nowalSet(t, db, 200, 210)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db, err = Open(nowalOptions(dir, true))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for i, ok := range nowalPresent(t, db, 210) {
		if !ok {
			t.Fatalf("key %d lost across a clean close", i)
		}
	}
}

// TestFlushMemTableWithConcurrentWrites: FlushMemTable while other
// goroutines write (run with -race): every write acknowledged before a flush
// returned is in a level-0 table, and nothing is lost.
func TestFlushMemTableWithConcurrentWrites(t *testing.T) {
	dir := t.TempDir()
	db, err := Open(nowalOptions(dir, true))
	if err != nil {
		t.Fatal(err)
	}
	const writers, each = 4, 300
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			nowalSet(t, db, w*each, (w+1)*each)
		}()
	}
	flushes := 0
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
loop:
	for {
		select {
		case <-done:
			break loop
		default:
		}
		if err := db.FlushMemTable(); err != nil {
			t.Fatal(err)
		}
		flushes++
	}
	if err := db.FlushMemTable(); err != nil {
		t.Fatal(err)
	}
	if n := len(db.Tables()); n == 0 {
		t.Fatalf("no level-0 table after %d flushes", flushes)
	}
	db.lock.RLock()
	active, waiting := db.mt.sl.Empty(), len(db.imm)
	db.lock.RUnlock()
	if !active || waiting != 0 {
		t.Fatalf("after FlushMemTable returned: active memtable empty=%v, %d waiting", active, waiting)
	}
	for i, ok := range nowalPresent(t, db, writers*each) {
		if !ok {
			t.Fatalf("key %d lost", i)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestFlushMemTableWithTheWAL: with the write-ahead file the call works the
// same (the memtable files of flushed memtables are deleted).
func TestFlushMemTableWithTheWAL(t *testing.T) {
	dir := t.TempDir()
	db, err := Open(nowalOptions(dir, false))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	nowalSet(t, db, 0, 50)
	if err := db.FlushMemTable(); err != nil {
		t.Fatal(err)
	}
	if len(db.Tables()) == 0 {
		t.Fatal("no table after FlushMemTable")
	}
	mems, _ := filepath.Glob(filepath.Join(dir, "*"+memFileExt))
	if len(mems) != 1 { // the active memtable's
		t.Fatalf("memtable files after FlushMemTable: %v, want only the active one's", mems)
	}
}
