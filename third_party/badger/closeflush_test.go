package badger

import (
	"os"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4/table"
)

// Close once a memtable can no longer be written (PATCHES.md, patch 2):
// upstream's flusher retried every second for ever and Close never
// returned (dgraph-io/badger#664).

func TestCloseGivesUpAFlushThatCannotBeWritten(t *testing.T) {
	for _, noWAL := range []bool{false, true} {
		dir := t.TempDir()
		db, err := Open(nowalOptions(dir, noWAL))
		if err != nil {
			t.Fatal(err)
		}
		nowalSet(t, db, 0, 10)
		if err := os.RemoveAll(dir); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- db.Close() }()
		select {
		case err := <-done:
			if err == nil {
				t.Fatalf("noWAL=%v: Close returned nil with its memtable unwritten", noWAL)
			}
			t.Logf("noWAL=%v: %v", noWAL, err)
		case <-time.After(time.Minute):
			t.Fatalf("noWAL=%v: Close has not returned after a minute", noWAL)
		}
	}
}

// A flush that fails while the database runs is still retried, and
// succeeds once the cause is gone: the give-up is for Close only.
func TestAFailedFlushIsRetriedWhileTheDBRuns(t *testing.T) {
	dir := t.TempDir()
	db, err := Open(nowalOptions(dir, true))
	if err != nil {
		t.Fatal(err)
	}
	nowalSet(t, db, 0, 10)
	// The flusher cannot create a table whose name a directory holds
	// (permissions would not stop root); each attempt takes the next
	// file ID, so the next 200 names are taken.
	next := db.lc.nextFileID.Load()
	var blocks []string
	for id := next; id < next+200; id++ {
		b := table.NewFilename(id, dir)
		if err := os.Mkdir(b, 0o755); err != nil {
			t.Fatal(err)
		}
		blocks = append(blocks, b)
	}
	flushed := make(chan error, 1)
	go func() { flushed <- db.FlushMemTable() }()
	select {
	case err := <-flushed:
		t.Fatalf("FlushMemTable returned (%v) while its table could not be created", err)
	case <-time.After(2500 * time.Millisecond): // two retries
	}
	for _, b := range blocks {
		if err := os.Remove(b); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case err := <-flushed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Minute):
		t.Fatal("the flush was not retried after its cause went away")
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db, err = Open(nowalOptions(dir, true))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for i, ok := range nowalPresent(t, db, 10) {
		if !ok {
			t.Fatalf("key %d lost", i)
		}
	}
}
