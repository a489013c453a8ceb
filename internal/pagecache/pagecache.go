// Package pagecache reads a database's files into the kernel's page
// cache ahead of need, and tells how much of them is there.
//
// Badger reads its tables through mmap. A read whose block is not in the
// page cache waits for the disk, and on Linux a fault in a mapped file
// reads a whole readahead window around the page (read_ahead_kb: 128 KB
// by default, 8 MB on the virtual disk issue 10 was measured on, where
// such a fault took ~10 ms): a history page that meets one is several
// times slower than a warm one. Until every part of a store has been
// read once after a start, some reads meet one. Prewarm reads the tables
// in once, in the background and at a bounded rate, when they fit
// comfortably in memory, so that after a restart cold reads last seconds
// rather than until the whole store has been touched by chance. It only
// gives the kernel hints: nothing is pinned, the kernel still evicts
// under memory pressure, and a failure costs nothing but the warmth.
package pagecache

import (
	"cmp"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Options tune Prewarm; zero values take the defaults.
type Options struct {
	// Suffix selects the files of dir to read (default ".sst", Badger's
	// tables).
	Suffix string
	// Rate bounds the reading, in bytes per second (default 64 MB/s), so
	// that it does not crowd out the Raft log's fsyncs on the same disk.
	Rate int64
	// Share is the part of the memory available (to the system, or to
	// the process's memory cgroup when that is less: a container's
	// limit) that the files may take (default 1/4); larger stores are
	// not read ahead: they would evict each other and whatever else the
	// machine caches.
	Share float64
	// Log receives one line when the reading is done or skipped.
	Log *slog.Logger
}

const chunk = 4 << 20 // bytes asked for at a time

func (o Options) withDefaults() Options {
	if o.Suffix == "" {
		o.Suffix = ".sst"
	}
	if o.Rate <= 0 {
		o.Rate = 64 << 20
	}
	if o.Share <= 0 {
		o.Share = 0.25
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return o
}

// file is one file Prewarm reads.
type file struct {
	path string
	size int64
}

// files lists dir's files ending in suffix, newest name first (Badger
// numbers its tables in creation order, and recent data is read most).
func files(dir, suffix string) ([]file, int64, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, 0, err
	}
	var out []file
	var total int64
	for _, e := range ents {
		if e.IsDir() || !strings.HasSuffix(e.Name(), suffix) {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue // deleted since ReadDir (a compaction): nothing to read
		}
		out = append(out, file{filepath.Join(dir, e.Name()), info.Size()})
		total += info.Size()
	}
	slices.SortFunc(out, func(a, b file) int { return cmp.Compare(b.path, a.path) })
	return out, total, nil
}

// Prewarm asks the kernel to read dir's files into the page cache, at
// most o.Rate bytes a second, if they take no more than o.Share of the
// memory available now; it returns the bytes asked for (0 when skipped)
// and stops early, with ctx's error, when ctx is done. A file deleted
// meanwhile is passed over. The reading itself is the kernel's,
// asynchronous: Prewarm may return before the last pages arrive.
func Prewarm(ctx context.Context, dir string, o Options) (int64, error) {
	o = o.withDefaults()
	fs, total, err := files(dir, o.Suffix)
	if err != nil || total == 0 {
		return 0, err
	}
	avail, ok := memAvailable()
	if !ok {
		o.Log.Debug("page cache: not reading ahead (no memory figure on this system)", "dir", dir)
		return 0, nil
	}
	if float64(total) > o.Share*float64(avail) {
		o.Log.Info("page cache: tables not read ahead, larger than their share of available memory",
			"dir", dir, "tables_mb", total>>20, "available_mb", avail>>20, "share", o.Share)
		return 0, nil
	}
	start := time.Now()
	var asked int64
	pace := time.NewTimer(0)
	defer pace.Stop()
	for _, f := range fs {
		n, err := readAhead(ctx, f, o.Rate, pace)
		asked += n
		if err != nil {
			return asked, err
		}
	}
	o.Log.Info("page cache: tables read ahead", "dir", dir, "mb", asked>>20,
		"files", len(fs), "took", time.Since(start).Round(time.Millisecond))
	return asked, nil
}

// readAhead asks for f chunk by chunk, waiting between chunks so that
// the asking stays under rate bytes a second.
func readAhead(ctx context.Context, f file, rate int64, pace *time.Timer) (int64, error) {
	h, err := os.Open(f.path)
	if err != nil {
		return 0, nil // deleted by a compaction since listed
	}
	defer h.Close()
	var asked int64
	for off := int64(0); off < f.size; off += chunk {
		select {
		case <-ctx.Done():
			return asked, ctx.Err()
		case <-pace.C:
		}
		n := min(chunk, f.size-off)
		if err := willNeed(h, off, n); err != nil {
			return asked, nil // a hint the system refused: give up on this file
		}
		asked += n
		pace.Reset(time.Duration(n * int64(time.Second) / rate))
	}
	return asked, nil
}

// Resident returns how many bytes of dir's files ending in suffix are in
// the page cache, and their total size: the warmth of a store, for
// benchmarks that must say what state they measured.
func Resident(dir, suffix string) (cached, total int64, err error) {
	fs, total, err := files(dir, suffix)
	if err != nil {
		return 0, 0, err
	}
	for _, f := range fs {
		n, err := residentBytes(f.path, f.size)
		if err != nil {
			continue // deleted meanwhile, or empty
		}
		cached += n
	}
	return cached, total, nil
}

// Evict asks the kernel to drop dir's files ending in suffix from the
// page cache (pages that are dirty or mapped by a process stay): for
// benchmarks that measure cold reads without dropping the whole
// machine's cache.
func Evict(dir, suffix string) error {
	fs, _, err := files(dir, suffix)
	if err != nil {
		return err
	}
	for _, f := range fs {
		if err := dontNeed(f.path); err != nil {
			return err
		}
	}
	return nil
}
