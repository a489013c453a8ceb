package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A node whose data directory can no longer be written (removed under it
// here; a failing disk alike) still stops on SIGTERM: Badger's flusher
// gave up its memtable only after Close, which waited for it for ever
// (dgraph-io/badger#664; third_party/badger/PATCHES.md, patch 2). The
// exit says so with a non-zero status.
func TestServeStopsWhenItsDatabaseCannotBeWritten(t *testing.T) {
	bin := edgechatBinary(t)
	dir := filepath.Join(t.TempDir(), "data")
	p := startServe(t, bin, "--dev", "--data", dir, "--http-addr", "127.0.0.1:0",
		"--mqtt-addr", "127.0.0.1:0", "--cluster-addr", "127.0.0.1:0")
	if code, err := httpJSON("GET", p.http+"/readyz", "", nil, nil); err != nil || code != 200 {
		t.Fatalf("readyz: %d %v", code, err)
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(time.Minute):
		t.Fatal("edgechat did not exit within a minute of SIGTERM")
	}
	if p.err == nil {
		t.Fatal("edgechat exited 0 with its database unwritten")
	}
	if logs := p.logs.String(); !strings.Contains(logs, "memtables not flushed") {
		t.Fatalf("the exit does not say the database was not written (%v); log:\n%s", p.err, logs)
	}
}

func TestStopTimeoutReadsTheEnvironment(t *testing.T) {
	for v, want := range map[string]time.Duration{
		"": defaultStopTimeout, "3s": 3 * time.Second, "2m": 2 * time.Minute,
		"0s": defaultStopTimeout, "-1s": defaultStopTimeout, "soon": defaultStopTimeout,
	} {
		if got := stopTimeout(v); got != want {
			t.Errorf("stopTimeout(%q) = %v, want %v", v, got, want)
		}
	}
}

// A node whose terminal closes (SIGHUP: `edgechat serve` run by hand in
// a terminal, an ssh session that ends) stops gracefully, as on SIGTERM:
// exit 0, its memtables written and its leadership handed over. Before,
// SIGHUP's default action ended it on the spot.
func TestServeStopsGracefullyOnSIGHUP(t *testing.T) {
	bin := edgechatBinary(t)
	dir := filepath.Join(t.TempDir(), "data")
	p := startServe(t, bin, "--dev", "--data", dir, "--http-addr", "127.0.0.1:0",
		"--mqtt-addr", "127.0.0.1:0", "--cluster-addr", "127.0.0.1:0")
	if code, err := httpJSON("GET", p.http+"/readyz", "", nil, nil); err != nil || code != 200 {
		t.Fatalf("readyz: %d %v", code, err)
	}
	_ = p.cmd.Process.Signal(syscall.SIGHUP)
	select {
	case <-p.exited:
	case <-time.After(time.Minute):
		t.Fatal("edgechat did not exit within a minute of SIGHUP")
	}
	if p.err != nil {
		t.Fatalf("edgechat ended with %v on SIGHUP, want a graceful stop (exit 0)", p.err)
	}
}
