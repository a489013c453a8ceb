package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
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
	// eu reaches us through a slow link (each chunk held 20 ms), so that
	// the backlog takes a while to drain and eu's leader dies meanwhile.
	slowUS := slowProxy(t, usMQTT, 20*time.Millisecond)
	usDir := t.TempDir()
	usArgs := []string{"--data", usDir, "--region", "us", "--region-number", "2", "--http-addr", "127.0.0.1:0", "--mqtt-addr", usMQTT,
		"--cluster-addr", "127.0.0.1:0", "--mqtt-publish-rate", "off",
		"--link", "eu=tcp://" + euMQTT, "--link-secret-file", secret}
	us := startServe(t, bin, usArgs...)
	runCLI(t, bin, "correct horse battery\n", "user", "add", "bob", "--password-stdin", "--server", us.http)

	eu := &testCluster{t: t, bin: bin, dirs: []string{t.TempDir(), t.TempDir(), t.TempDir()},
		extra: []string{"--region", "eu", "--region-number", "1", "--link", "us=tcp://" + slowUS, "--link-secret-file", secret}}
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

	us = startServe(t, bin, usArgs...)
	bobTok = mintToken(t, bin, usDir, "bob", us)
	leader, err := eu.leader()
	if err != nil {
		t.Fatal(err)
	}
	// As soon as something of the backlog arrived, eu's leader dies.
	arrived := 0
	checkFor(t, 30*time.Second, 5*time.Millisecond, func() error {
		if arrived = len(syncedOnce(t, us.http, bobTok)); arrived <= 50 {
			return fmt.Errorf("%d messages in us", arrived)
		}
		return nil
	})
	eu.proc(leader).stop(t, syscall.SIGKILL)
	if arrived >= 1000 {
		t.Fatalf("the backlog drained before eu's leader was killed: the test tests nothing")
	}
	t.Logf("killed eu's leader n%d with %d of 1000 messages in us", leader+1, arrived)

	order := waitSynced(t, us.http, bobTok, 1000, 60*time.Second)
	for i, k := range order {
		if k != i {
			t.Fatalf("bob's sync in us: position %d holds m%d", i, k)
		}
	}
}

// slowProxy forwards TCP connections to target and holds every chunk it
// reads for delay before passing it on (a link with latency: this kernel
// has no netem). It returns its address.
func slowProxy(t *testing.T, target string, delay time.Duration) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	pipe := func(dst, src net.Conn) {
		defer dst.Close()
		defer src.Close()
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				time.Sleep(delay)
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
			go pipe(u, c)
			go pipe(c, u)
		}
	}()
	return l.Addr().String()
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
