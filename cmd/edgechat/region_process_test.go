package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// Two regions as separate processes: eu, a 3-node cluster, and us, one
// node, linked both ways. alice@eu writes to bob@us while us is down (the
// link's backlog waits in eu's Raft log), us comes back, and eu's leader
// is killed with SIGKILL while the backlog drains: every message alice's
// region acknowledged reaches bob's region once, in alice's order.
func TestRegionLinkSurvivesOutageAndLeaderKill(t *testing.T) {
	if testing.Short() {
		t.Skip("runs four edgechat processes")
	}
	bin := edgechatBinary(t)
	secret := filepath.Join(t.TempDir(), "link-secret")
	if err := os.WriteFile(secret, []byte("a shared secret of the two regions\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Each region's link names the other's MQTT listener before it runs:
	// the addresses are picked first (port 0, then freed).
	usMQTT, euMQTT := freeAddr(t), freeAddr(t)
	// eu reaches us through a proxy that can stop the link in the middle
	// of draining the backlog, for eu's leader to die meanwhile.
	gate := newGateProxy(t, usMQTT)
	usDir := t.TempDir()
	usArgs := []string{"--data", usDir, "--region", "us", "--region-number", "2", "--http-addr", "127.0.0.1:0", "--mqtt-addr", usMQTT,
		"--cluster-addr", "127.0.0.1:0", "--mqtt-publish-rate", "off",
		"--link", "eu=tcp://" + euMQTT, "--link-secret-file", secret}
	us := startServe(t, bin, usArgs...)
	runCLI(t, bin, "correct horse battery\n", "user", "add", "bob", "--password-stdin", "--server", us.http)

	eu := &testCluster{t: t, bin: bin, dirs: []string{t.TempDir(), t.TempDir(), t.TempDir()},
		extra: []string{"--region", "eu", "--region-number", "1", "--link", "us=tcp://" + gate.addr, "--link-secret-file", secret}}
	eu.procs = make([]*proc, 3)
	first := eu.args(0, "127.0.0.1:0", "")
	first[slices.Index(first, "--mqtt-addr")+1] = euMQTT // n1's: the address us links to
	eu.procs[0] = startServe(t, bin, first...)
	for i := 1; i < 3; i++ {
		eu.procs[i] = startServe(t, bin, eu.args(i, "127.0.0.1:0", eu.procs[0].cluster)...)
	}
	eu.waitFormed(30 * time.Second)
	tokens := eu.addUsers("correct horse battery", "alice")

	send := func(c *paho.Client, from, to int) {
		t.Helper()
		for k := from; k < to; k++ {
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			pr, err := c.Publish(ctx, &paho.Publish{Topic: "user/bob@us/newMessage", QoS: 1,
				Payload: fmt.Appendf(nil, `{"cid":"m%d","type":"text","body":"%d"}`, k, k)})
			cancel()
			if err != nil || pr.ReasonCode != 0 {
				t.Fatalf("publish m%d: %v %+v", k, err, pr)
			}
		}
	}
	alice := dialV5(t, eu.proc(1).mqtt, "alice/phone", "alice", tokens["alice"])
	send(alice, 0, 50)
	bobTok := mintToken(t, bin, usDir, "bob", us)
	waitSynced(t, us.http, bobTok, 50, 30*time.Second)

	// us goes away; eu acknowledges what alice sends meanwhile.
	us.stop(t, syscall.SIGKILL)
	send(alice, 50, 1000)

	// The link drains part of the backlog (40 KB of its ~150), then stops
	// in the middle, and eu's leader dies.
	gate.arm(40 << 10)
	us = startServe(t, bin, usArgs...)
	bobTok = mintToken(t, bin, usDir, "bob", us)
	leader, err := eu.leader()
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-gate.held:
	case <-time.After(30 * time.Second):
		t.Fatal("the link did not start draining the backlog")
	}
	eu.proc(leader).stop(t, syscall.SIGKILL)
	arrived := len(syncedOnce(t, us.http, bobTok))
	gate.open()
	t.Logf("killed eu's leader n%d with %d of 1000 messages in us, the link stopped mid-backlog", leader+1, arrived)

	order := waitSynced(t, us.http, bobTok, 1000, 60*time.Second)
	for i, k := range order {
		if k != i {
			t.Fatalf("bob's sync in us: position %d holds m%d", i, k)
		}
	}
}

// gateProxy forwards TCP connections to target. Once armed, it lets
// limit more bytes through towards the target, then holds what comes
// until released: a link stopped in the middle of draining a backlog.
type gateProxy struct {
	addr    string
	mu      sync.Mutex
	armed   bool
	left    int64         // bytes still let through while armed
	held    chan struct{} // closed when the limit is reached
	release chan struct{}
}

func newGateProxy(t *testing.T, target string) *gateProxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	g := &gateProxy{addr: l.Addr().String(), held: make(chan struct{}), release: make(chan struct{})}
	pipe := func(dst, src net.Conn, gated bool) {
		defer dst.Close()
		defer src.Close()
		buf := make([]byte, 4<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				if gated {
					g.pass(int64(n))
				}
				if _, werr := dst.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			go pipe(u, c, true)
			go pipe(c, u, false)
		}
	}()
	return g
}

// arm lets limit more bytes through, then holds.
func (g *gateProxy) arm(limit int64) {
	g.mu.Lock()
	g.armed, g.left = true, limit
	g.mu.Unlock()
}

// pass waits, once the limit is used up, until released.
func (g *gateProxy) pass(n int64) {
	g.mu.Lock()
	wait := false
	if g.armed {
		g.left -= n
		if g.left <= 0 {
			wait = true
			select {
			case <-g.held:
			default:
				close(g.held)
			}
		}
	}
	g.mu.Unlock()
	if wait {
		<-g.release
	}
}

func (g *gateProxy) open() {
	g.mu.Lock()
	g.armed = false
	g.mu.Unlock()
	close(g.release)
}

// freeAddr is a 127.0.0.1 address with a port the kernel just handed
// out (and that nothing listens on now).
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// syncedOnce lists the bodies (message numbers) of bob's sync, in sync
// order, failing the test on a message synced twice.
func syncedOnce(t *testing.T, httpURL, token string) []int {
	t.Helper()
	msgs, err := syncMessages(httpURL, token)
	if err != nil {
		return nil // the node is starting
	}
	seen := map[string]bool{}
	var out []int
	for _, m := range msgs {
		if seen[m.CID] {
			t.Fatalf("%s synced twice", m.CID)
		}
		seen[m.CID] = true
		k, err := strconv.Atoi(m.Body)
		if err != nil {
			t.Fatalf("body %q", m.Body)
		}
		out = append(out, k)
	}
	return out
}

// waitSynced waits until bob's sync holds n messages and returns them.
func waitSynced(t *testing.T, httpURL, token string, n int, within time.Duration) []int {
	t.Helper()
	var got []int
	checkFor(t, within, 50*time.Millisecond, func() error {
		if got = syncedOnce(t, httpURL, token); len(got) != n {
			return fmt.Errorf("%d of %d messages in us", len(got), n)
		}
		return nil
	})
	return got
}
