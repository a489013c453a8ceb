package main

import (
	"context"
	"errors"
	"os"
	"testing"
)

func TestFsyncProbe(t *testing.T) {
	dir := t.TempDir()
	r, err := RunFsync(context.Background(), FsyncConfig{Dir: dir, N: 20, Size: 512})
	if err != nil {
		t.Fatal(err)
	}
	if r.N != 20 || r.P50 <= 0 || r.P50 > r.P99 || r.P99 > r.Max || r.PerSecond <= 0 {
		t.Fatalf("result %+v", r)
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Fatalf("the probe left %d files", len(left))
	}
	if _, err := RunFsync(context.Background(), FsyncConfig{Dir: dir, N: 0, Size: 1}); !errors.Is(err, errUsage) {
		t.Fatalf("n=0: %v", err)
	}
}
