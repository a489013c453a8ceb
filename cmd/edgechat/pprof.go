//go:build pprof

package main

// A profiling build (go build -tags pprof) serves net/http/pprof on
// EDGECHAT_PPROF_ADDR (e.g. 127.0.0.1:6060) for memory and CPU profiles of
// a running node. Release builds do not contain it: the endpoint and its
// dependencies stay out of the edge binary.

import (
	"log/slog"
	"net/http"
	_ "net/http/pprof" // registers /debug/pprof on http.DefaultServeMux
	"os"
	"runtime"
	"strconv"
)

func init() {
	// EDGECHAT_MEMPROFILERATE (bytes) samples allocations more finely than
	// the default 512 KiB, for per-connection heap figures.
	if r, err := strconv.Atoi(os.Getenv("EDGECHAT_MEMPROFILERATE")); err == nil && r > 0 {
		runtime.MemProfileRate = r
	}
	addr := os.Getenv("EDGECHAT_PPROF_ADDR")
	if addr == "" {
		return
	}
	go func() {
		if err := http.ListenAndServe(addr, nil); err != nil {
			slog.Error("pprof listener", "addr", addr, "error", err)
		}
	}()
}
