package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestNodeRecoversFromAFullDisk fills the node's disk while senders
// publish: publishes are refused (never acknowledged), and once there is
// room again the node takes messages again by itself, without a restart,
// and every acknowledged message is there, also after a restart. Before
// third_party/raft-wal's patch the Raft log's failed segment rotation
// left its tail sealed: every later append failed with "segment is
// sealed", across restarts too.
//
// The disk is a real one: a 64 MB tmpfs mounted for the test, so it runs
// as root only (CI does) and is skipped elsewhere.
func TestNodeRecoversFromAFullDisk(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and fills the disk of a real process")
	}
	if os.Geteuid() != 0 {
		t.Skip("mounting a small tmpfs needs root")
	}
	bin := edgechatBinary(t)
	mnt := filepath.Join(t.TempDir(), "disk")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs: %v %s", err, out)
	}
	// Registered before the node's: runs after it has been stopped.
	t.Cleanup(func() {
		if out, err := exec.Command("umount", "-l", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v %s", mnt, err, out)
		}
	})
	data := filepath.Join(mnt, "data")
	args := []string{"--data", data, "--http-addr", "127.0.0.1:0", "--mqtt-addr", "127.0.0.1:0",
		"--cluster-addr", "127.0.0.1:0", "--mqtt-publish-rate", "off"}
	p := startServe(t, bin, args...)
	tokens := map[string]string{}
	for _, u := range []string{"alice", "bob", "carol"} {
		runCLI(t, bin, "correct horse battery\n", "user", "add", u, "--password-stdin", "--server", p.http)
		tokens[u] = mintToken(t, bin, data, u, p)
	}

	// Leave 2 MB: less than the Raft log's next segment (4 MB,
	// preallocated), so its rotation fails.
	var st syscall.Statfs_t
	if err := syscall.Statfs(mnt, &st); err != nil {
		t.Fatal(err)
	}
	ballast := filepath.Join(mnt, "ballast")
	fill := int64(st.Bavail)*st.Bsize - 2<<20
	if err := writeZeros(ballast, fill); err != nil {
		t.Fatal(err)
	}

	// While the log still has room: an upload that does not fit is 507
	// insufficient_storage, not a bare 500.
	upload := append([]byte("\x89PNG\r\n\x1a\n"), make([]byte, 6<<20)...)
	req, _ := http.NewRequest("POST", p.http+"/media?name=big.png", bytes.NewReader(upload))
	req.Header.Set("Authorization", "Bearer "+tokens["alice"])
	req.Header.Set("Content-Type", "image/png")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusInsufficientStorage || !strings.Contains(string(body), "insufficient_storage") {
		t.Fatalf("upload on a full disk: %d %s", resp.StatusCode, body)
	}

	senders := []string{"alice", "carol"}
	addrs := func(int) []string { return []string{p.mqtt} }
	l := startLoad(tokens, senders, "bob", addrs)
	defer l.finish()
	refusals := func() int {
		n := 0
		for _, s := range l.senders {
			_, refused, failed, _ := s.snapshot()
			n += refused + failed
		}
		return n
	}
	checkFor(t, 2*time.Minute, 50*time.Millisecond, func() error {
		if refusals() == 0 {
			return fmt.Errorf("no publish refused yet (%d acknowledged)", l.total())
		}
		return nil
	})
	full := l.total()
	// Not ready while it cannot write its log: load balancers move new
	// clients elsewhere.
	checkFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		code, body, err := getBody(p.http + "/readyz")
		if err != nil || code != 503 || !strings.Contains(body, "cannot write the Raft log") {
			return fmt.Errorf("readyz %d %q %v", code, body, err)
		}
		return nil
	})
	time.Sleep(time.Second) // refusals go on while the disk stays full
	t.Logf("disk full after %d acknowledged messages; %d acknowledged since, %d refused or failed",
		full, l.total()-full, refusals())

	if err := os.Remove(ballast); err != nil {
		t.Fatal(err)
	}
	took := l.waitProgress(t, 300, time.Minute)
	t.Logf("300 more messages acknowledged %v after the disk had room", took)
	if code := readyz(p.http); code != 200 {
		t.Fatalf("readyz %d once the node commits again", code)
	}
	l.finish()
	verifyAcked(t, p.http, tokens["bob"], l.senders, 30*time.Second)

	p.stop(t, syscall.SIGTERM)
	p = startServe(t, bin, args...)
	verifyAcked(t, p.http, tokens["bob"], l.senders, 30*time.Second)
	if logs := p.logs.String(); strings.Contains(logs, "segment is sealed") {
		t.Fatalf("the restarted node still finds its log sealed:\n%s", logs)
	}
}

func getBody(url string) (int, string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// writeZeros writes n bytes of zeros to a new file at path (a tmpfs keeps
// every page written, so the space is taken).
func writeZeros(path string, n int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	for n > 0 {
		k := min(n, int64(len(buf)))
		if _, err := f.Write(buf[:k]); err != nil {
			f.Close()
			return err
		}
		n -= k
	}
	return f.Close()
}

// stalledNode is a node whose Badger directory was made read-only (a
// read-only bind mount over it) while senders published, until the node
// said the FSM is stuck in an apply: Badger cannot write its memtables
// out, and once they are full it waits for room.
type stalledNode struct {
	bin     string
	args    []string
	p       *proc
	tokens  map[string]string
	load    *load
	unmount func()
}

// stallDatabase starts a node, makes its database unwritable under load
// and waits for /readyz to say so. Root only (skips elsewhere). The
// load keeps running; the caller finishes it.
func stallDatabase(t *testing.T, extraEnv ...string) *stalledNode {
	t.Helper()
	if testing.Short() {
		t.Skip("builds a real process and stalls its database")
	}
	if os.Geteuid() != 0 {
		t.Skip("a read-only bind mount needs root")
	}
	for _, kv := range extraEnv {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v) // the node inherits it
	}
	n := &stalledNode{bin: edgechatBinary(t), tokens: map[string]string{}}
	data := t.TempDir()
	n.args = []string{"--data", data, "--http-addr", "127.0.0.1:0", "--mqtt-addr", "127.0.0.1:0",
		"--cluster-addr", "127.0.0.1:0", "--mqtt-publish-rate", "off"}
	db := filepath.Join(data, "db")
	mounted := false
	n.unmount = func() {
		if mounted {
			mounted = false
			if out, err := exec.Command("umount", "-l", db).CombinedOutput(); err != nil {
				t.Errorf("umount %s: %v %s", db, err, out)
			}
		}
	}
	t.Cleanup(n.unmount) // registered before the node's: runs after it stopped
	n.p = startServe(t, n.bin, n.args...)
	for _, u := range []string{"alice", "bob", "carol", "dave"} {
		runCLI(t, n.bin, "correct horse battery\n", "user", "add", u, "--password-stdin", "--server", n.p.http)
		n.tokens[u] = mintToken(t, n.bin, data, u, n.p)
	}
	if out, err := exec.Command("mount", "--bind", db, db).CombinedOutput(); err != nil {
		t.Skipf("cannot bind-mount: %v %s", err, out)
	}
	mounted = true
	if out, err := exec.Command("mount", "-o", "remount,ro,bind", db).CombinedOutput(); err != nil {
		t.Fatalf("remount read-only: %v %s", err, out)
	}
	p := n.p
	// 4 KB bodies: the memtables (which no longer write ahead to disk)
	// fill in a few thousand messages, also at a loaded machine's rate.
	n.load = startPaddedLoad(n.tokens, []string{"alice", "carol", "dave"}, "bob", func(int) []string { return []string{p.mqtt} }, 4<<10)
	t.Cleanup(n.load.finish)
	var reason string
	checkFor(t, 3*time.Minute, 100*time.Millisecond, func() error {
		code, body, err := getBody(p.http + "/readyz")
		if err != nil || code != 503 || !strings.Contains(body, "applying a Raft entry is stalled") {
			return fmt.Errorf("readyz %d %q %v (%d acknowledged)", code, body, err, n.load.total())
		}
		reason = body
		return nil
	})
	t.Logf("stalled after %d acknowledged messages: %s", n.load.total(), reason)
	return n
}

// TestNodeRecoversWhenItsDatabaseCannotWrite: a node whose database
// stopped writing says it is not ready (`/readyz` 503, "applying a Raft
// entry is stalled"), and once the directory is writable again it
// applies, commits and is ready by itself, with every acknowledged
// message there. Root only, like the full disk above.
func TestNodeRecoversWhenItsDatabaseCannotWrite(t *testing.T) {
	n := stallDatabase(t)
	n.unmount()
	took := n.load.waitProgress(t, 300, time.Minute)
	t.Logf("300 more messages acknowledged %v after the database could write", took)
	checkFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		if code := readyz(n.p.http); code != 200 {
			return fmt.Errorf("readyz %d", code)
		}
		return nil
	})
	n.load.finish()
	verifyAcked(t, n.p.http, n.tokens["bob"], n.load.senders, 30*time.Second)
}

// TestServeStopsWhenItsDatabaseStalled: SIGTERM to a node whose database
// cannot write. Its graceful stop hangs (Badger's reads wait for the
// write that cannot finish, and the broker's stop waits for a read), so
// the process ends after EDGECHAT_STOP_TIMEOUT with status 1 and says
// why; restarted with a writable database it holds every acknowledged
// message (the Raft log had them).
func TestServeStopsWhenItsDatabaseStalled(t *testing.T) {
	n := stallDatabase(t, "EDGECHAT_STOP_TIMEOUT=3s")
	n.load.finish() // its unanswered publishes are not acknowledged
	_ = n.p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.p.exited:
	case <-time.After(time.Minute):
		t.Fatal("edgechat did not exit within a minute of SIGTERM")
	}
	if n.p.err == nil {
		t.Fatal("edgechat exited 0 from a stop that could not finish")
	}
	if logs := n.p.logs.String(); !strings.Contains(logs, "did not stop within 3s of the signal") {
		t.Fatalf("the exit (%v) does not say why; log:\n%s", n.p.err, logs)
	}
	n.unmount()
	p := startServe(t, n.bin, n.args...)
	verifyAcked(t, p.http, n.tokens["bob"], n.load.senders, time.Minute)
}
