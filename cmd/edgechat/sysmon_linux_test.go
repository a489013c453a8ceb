package main

import (
	"bytes"
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"

	"github.com/edgechat/edgechat/internal/sysmon"
)

// A node runs with the system monitor setting (internal/sysmon) when it
// has two Ps or more: `serve` started itself again, in the same process,
// with the setting in its environment.
func TestServeStartsAgainWithTheSystemMonitorSetting(t *testing.T) {
	if strings.Contains(os.Getenv("GODEBUG"), "schedtrace") {
		t.Skip("GODEBUG of the test run names schedtrace: the node keeps it")
	}
	bin := edgechatBinary(t)
	p := startServe(t, bin, "--data", t.TempDir(), "--http-addr", "127.0.0.1:0",
		"--mqtt-addr", "127.0.0.1:0", "--cluster-addr", "127.0.0.1:0")
	environ, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", p.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	var godebug string
	for _, kv := range bytes.Split(environ, []byte{0}) {
		if v, ok := strings.CutPrefix(string(kv), "GODEBUG="); ok {
			godebug = v
			break
		}
	}
	// The node inherits this test's environment and CPU affinity, so it
	// has as many Ps as the test.
	want := runtime.GOMAXPROCS(0) >= 2
	if got := strings.Contains(godebug, sysmon.Setting); got != want {
		t.Fatalf("node %d (GOMAXPROCS %d here) runs with GODEBUG=%q: setting present %v, want %v",
			p.cmd.Process.Pid, runtime.GOMAXPROCS(0), godebug, got, want)
	}
	code, err := httpJSON("GET", p.http+"/readyz", "", nil, nil)
	if err != nil || code != 200 {
		t.Fatalf("readyz: %d %v", code, err)
	}
}
