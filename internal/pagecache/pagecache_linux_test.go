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
		// Read-ahead is advice: the kernel may leave a page or two out
		// (CI saw 8 KiB of 6 MiB missing once). Without Prewarm next to
		// nothing is cached (coldFile checked that).
		if cached >= total*99/100 {
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

func TestMemAvailableHonoursTheCgroupLimit(t *testing.T) {
	write := func(root, name, data string) {
		t.Helper()
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	const meminfo = "MemTotal:       24683520 kB\nMemAvailable:   20000000 kB\n"
	for _, c := range []struct {
		name  string
		files map[string]string
		want  int64
	}{
		{"no cgroup file", map[string]string{}, 20000000 << 10},
		{"v2 limited", map[string]string{
			"proc/self/cgroup":                 "0::/app\n",
			"sys/fs/cgroup/app/memory.max":     "536870912\n",
			"sys/fs/cgroup/app/memory.current": "136870912\n",
		}, 400000000},
		{"v2 unlimited", map[string]string{
			"proc/self/cgroup":                 "0::/app\n",
			"sys/fs/cgroup/app/memory.max":     "max\n",
			"sys/fs/cgroup/app/memory.current": "136870912\n",
		}, 20000000 << 10},
		{"v2 namespaced: the root holds the files", map[string]string{
			"proc/self/cgroup":             "0::/\n",
			"sys/fs/cgroup/memory.max":     "1073741824\n",
			"sys/fs/cgroup/memory.current": "73741824\n",
		}, 1000000000},
		{"v1 limited", map[string]string{
			"proc/self/cgroup": "9:pids:/\n4:memory:/job/1\n0::/\n",
			"sys/fs/cgroup/memory/job/1/memory.limit_in_bytes": "300000000\n",
			"sys/fs/cgroup/memory/job/1/memory.usage_in_bytes": "100000000\n",
		}, 200000000},
		{"v1 unlimited", map[string]string{
			"proc/self/cgroup": "4:memory:/job/1\n",
			"sys/fs/cgroup/memory/job/1/memory.limit_in_bytes": "9223372036854771712\n",
			"sys/fs/cgroup/memory/job/1/memory.usage_in_bytes": "100000000\n",
		}, 20000000 << 10},
	} {
		t.Run(c.name, func(t *testing.T) {
			root := t.TempDir()
			write(root, "proc/meminfo", meminfo)
			for name, data := range c.files {
				write(root, name, data)
			}
			got, ok := memAvailableUnder(root)
			if !ok || got != c.want {
				t.Errorf("memAvailableUnder = %d, %v; want %d", got, ok, c.want)
			}
		})
	}
}
