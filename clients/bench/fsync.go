package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// FsyncConfig is the disk probe: append Size bytes and fdatasync, N
// times, as a Raft log append does. Every durable PUBACK waits for at
// least one such write, so its percentiles bound what PUBACK latency the
// machine allows whatever the server does.
type FsyncConfig struct {
	Dir  string
	N    int
	Size int
}

// FsyncResult is what the probe measured.
type FsyncResult struct {
	N                        int
	P50, P90, P99, P999, Max time.Duration
	PerSecond                float64
}

// RunFsync runs the probe in a file under cfg.Dir, removed afterwards.
func RunFsync(ctx context.Context, cfg FsyncConfig) (FsyncResult, error) {
	if cfg.N <= 0 || cfg.Size <= 0 {
		return FsyncResult{}, fmt.Errorf("%w: fsync needs -n and --size above 0", errUsage)
	}
	f, err := os.CreateTemp(cfg.Dir, "fsync-probe-*")
	if err != nil {
		return FsyncResult{}, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	buf := make([]byte, cfg.Size)
	for i := range buf {
		buf[i] = byte(i)
	}
	took := make([]time.Duration, 0, cfg.N)
	start := time.Now()
	for range cfg.N {
		if err := ctx.Err(); err != nil {
			return FsyncResult{}, err
		}
		t0 := time.Now()
		if _, err := f.Write(buf); err != nil {
			return FsyncResult{}, err
		}
		if err := fdatasync(f); err != nil {
			return FsyncResult{}, err
		}
		took = append(took, time.Since(t0))
	}
	elapsed := time.Since(start)
	slices.Sort(took)
	return FsyncResult{N: cfg.N, P50: Percentile(took, 50), P90: Percentile(took, 90), P99: Percentile(took, 99),
		P999: Percentile(took, 99.9), Max: took[len(took)-1], PerSecond: float64(cfg.N) / elapsed.Seconds()}, nil
}

func printFsync(w io.Writer, cfg FsyncConfig, r FsyncResult) {
	dir, _ := filepath.Abs(cfg.Dir)
	fmt.Fprintf(w, "mode                       fsync (append %d B + fdatasync, %d times, in %s)\n", cfg.Size, r.N, dir)
	fmt.Fprintf(w, "write+fdatasync ms         p50 %.2f  p90 %.2f  p99 %.2f  p99.9 %.2f  max %.2f\n",
		ms(r.P50), ms(r.P90), ms(r.P99), ms(r.P999), ms(r.Max))
	fmt.Fprintf(w, "rate                       %.0f per second, one at a time\n", r.PerSecond)
}
