package pagecache

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// coldFile writes a file of size bytes named name in dir and drops it
// from the page cache; the test is skipped where that cannot be done
// (a tmpfs keeps its pages).
func coldFile(t *testing.T, dir, name string, size int) string {
	t.Helper()
	path := filepath.Join(dir, name)
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i * 7)
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil { // dirty pages are not dropped
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := dontNeed(path); err != nil {
		t.Fatal(err)
	}
	n, err := residentBytes(path, int64(size))
	if err != nil {
		t.Fatal(err)
	}
	if n > int64(size)/2 {
		t.Skipf("%s: the page cache keeps %d of %d bytes after eviction (tmpfs?)", dir, n, size)
	}
	return path
}

func TestPrewarmReadsTablesIntoThePageCache(t *testing.T) {
	dir := t.TempDir()
	const size = 3 << 20
	coldFile(t, dir, "000001.sst", size)
	coldFile(t, dir, "000002.sst", size)
	other := coldFile(t, dir, "MANIFEST.sst.other", size) // not a table: left alone
	asked, err := Prewarm(context.Background(), dir, Options{Rate: 1 << 40, Share: 1})
	if err != nil || asked != 2*size {
		t.Fatalf("Prewarm = %d, %v; want %d", asked, err, 2*size)
	}
	// The kernel reads asynchronously: wait for the pages to arrive.
	deadline := time.Now().Add(20 * time.Second)
	for {
		cached, total, err := Resident(dir, ".sst")
		if err != nil {
			t.Fatal(err)
		}
		if total != 2*size {
			t.Fatalf("Resident counts %d bytes of tables, want %d", total, 2*size)
		}
		if cached == total {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after Prewarm, %d of %d bytes in the page cache", cached, total)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n, _ := residentBytes(other, size); n > size/2 {
		t.Errorf("a file without the suffix was read ahead: %d bytes cached", n)
	}
}

func TestPrewarmSkipsTablesLargerThanTheirShare(t *testing.T) {
	dir := t.TempDir()
	path := coldFile(t, dir, "000001.sst", 1<<20)
	asked, err := Prewarm(context.Background(), dir, Options{Share: 1e-9})
	if err != nil || asked != 0 {
		t.Fatalf("Prewarm = %d, %v; want a skip", asked, err)
	}
	if n, _ := residentBytes(path, 1<<20); n > 1<<19 {
		t.Errorf("skipped, yet %d bytes were read ahead", n)
	}
}

func TestPrewarmStopsWithItsContext(t *testing.T) {
	dir := t.TempDir()
	coldFile(t, dir, "000001.sst", 3*chunk)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var asked int64
	go func() {
		var err error
		asked, err = Prewarm(ctx, dir, Options{Rate: 1, Share: 1}) // one chunk, then a wait of years
		done <- err
	}()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Prewarm after cancel = %v, want context.Canceled", err)
	}
	if asked > chunk {
		t.Errorf("asked for %d bytes at 1 byte/s before the cancel", asked)
	}
}
