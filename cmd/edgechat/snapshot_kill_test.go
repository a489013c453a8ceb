package main

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// TestSIGKILLRightAfterAReferenceSnapshot kills a node with SIGKILL the
// moment its first Raft snapshot appears on disk, while senders keep
// publishing. The snapshot only refers to the node's Badger (which runs
// with SyncWrites off: the snapshot's barrier synced it), and Raft will
// not replay the entries before it; after the restart every acknowledged
// message must be there exactly once, and the node must have started
// from its reference snapshot.
func TestSIGKILLRightAfterAReferenceSnapshot(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills a real process")
	}
	bin := edgechatBinary(t)
	data := t.TempDir()
	common := []string{"--data", data, "--http-addr", "127.0.0.1:0", "--mqtt-addr", "127.0.0.1:0", "--mqtt-publish-rate", "off"}
	p := startServe(t, bin, append(common, "--cluster-addr", "127.0.0.1:0")...)
	for _, u := range []string{"alice", "bob"} {
		if out := runCLI(t, bin, "correct horse battery\n", "user", "add", u, "--password-stdin", "--server", p.http); !strings.Contains(out, u) {
			t.Fatalf("user add said %q", out)
		}
	}
	token := mintToken(t, bin, data, "alice", p)

	clients := []*paho.Client{
		dialV5(t, p.mqtt, "alice/load0", "alice", token),
		dialV5(t, p.mqtt, "alice/load1", "alice", token),
	}
	load := startKillLoad(t, clients, 8, "bob") // eight publishes in flight per connection

	// The first snapshot: Raft takes one every 5-10 s once about 8 MB of
	// log (or 16384 entries) were applied since the last.
	snapDir := filepath.Join(data, "raft", "snapshots")
	var snapFile string
	checkFor(t, 180*time.Second, 2*time.Millisecond, func() error {
		files, _ := filepath.Glob(filepath.Join(snapDir, "*", "state.bin"))
		for _, f := range files {
			if !strings.HasSuffix(filepath.Dir(f), ".tmp") {
				snapFile = f
				return nil
			}
		}
		return fmt.Errorf("no snapshot yet")
	})
	acked := load.kill(func() { p.stop(t, syscall.SIGKILL) })
	if t.Failed() {
		return
	}
	if st, err := os.Stat(snapFile); err != nil || st.Size() > 256 {
		t.Fatalf("snapshot %s: %v, %v; want a reference of a few bytes", snapFile, st, err)
	}
	t.Logf("%d messages acknowledged before the kill", len(acked))

	p2 := startServe(t, bin, append(common, "--cluster-addr", p.cluster)...)
	checkFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		if c := readyz(p2.http); c != http.StatusOK {
			return fmt.Errorf("restarted node /readyz %d", c)
		}
		return nil
	})
	if !strings.Contains(p2.logs.String(), "local state includes the reference snapshot") {
		t.Errorf("the restarted node did not start from its reference snapshot")
	}
	seen, _ := syncAll(t, p2.http, mintToken(t, bin, data, "bob", p2))
	for _, cid := range acked {
		if seen[cid] != 1 {
			t.Errorf("acknowledged message %s found %d times after the snapshot, SIGKILL and restart", cid, seen[cid])
		}
	}
	p2.stop(t, syscall.SIGTERM)
}
