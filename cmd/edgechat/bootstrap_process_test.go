package main

import (
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// "New cluster of three" of operations.md, to the letter, with real
// processes, as compose and Kubernetes run it: three nodes with distinct
// --node-id, --bootstrap-expect 3 and --join of every node's cluster
// address (their own included, as the StatefulSet passes), started at
// once. They form one cluster: every /readyz turns 200, all three name
// one leader and list three voters, and a message commits.
func TestNewClusterOfThreeFormsAsDocumented(t *testing.T) {
	bin := edgechatBinary(t)
	addrs := make([]string, 3)
	for i := range addrs {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addrs[i] = ln.Addr().String()
		_ = ln.Close()
	}
	c := &testCluster{t: t, bin: bin, dirs: []string{t.TempDir(), t.TempDir(), t.TempDir()}}
	c.procs = make([]*proc, 3)
	for i := range 3 {
		c.procs[i] = startProc(t, nil, bin, "--data", c.dirs[i], "--node-id", fmt.Sprintf("n%d", i+1),
			"--http-addr", "127.0.0.1:0", "--mqtt-addr", "127.0.0.1:0", "--cluster-addr", addrs[i],
			"--bootstrap-expect", "3", "--join", strings.Join(addrs, ","))
	}
	for i := range 3 {
		c.procs[i].waitServing(t, 60*time.Second)
	}
	checkFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		for i := range 3 {
			if st := readyz(c.procs[i].http); st != http.StatusOK {
				return fmt.Errorf("n%d /readyz: %d", i+1, st)
			}
		}
		for i := range 3 {
			// Every node's operator key is trusted cluster-wide once published.
			v, err := clusterStatus(bin, c.procs[i].http, c.dirs[i])
			if err != nil {
				return err
			}
			if v.Leader == "" || strings.Count(v.Raw, "Voter") != 3 {
				return fmt.Errorf("n%d's status:\n%s", i+1, v.Raw)
			}
		}
		_, err := c.leader()
		return err
	})
	out := runCLI(t, bin, "password-alice\n", "user", "add", "alice", "--password-stdin", "--server", c.procs[2].http)
	if !strings.Contains(out, "created user") {
		t.Fatalf("user add through n3: %q", out)
	}
}
