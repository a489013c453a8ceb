package node_test

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/node/nodetest"
)

// mosquittoClients returns the paths of the stock Mosquitto clients, or
// skips the test when they are not installed.
func mosquittoClients(t *testing.T) (sub, pub string) {
	t.Helper()
	sub, err := exec.LookPath("mosquitto_sub")
	if err != nil {
		t.Skip("SKIP: mosquitto_sub not found (apt-get install mosquitto-clients): the stock-client checks of --dev did not run")
	}
	pub, err = exec.LookPath("mosquitto_pub")
	if err != nil {
		t.Skip("SKIP: mosquitto_pub not found (apt-get install mosquitto-clients): the stock-client checks of --dev did not run")
	}
	return sub, pub
}

// mosqSub is a running mosquitto_sub.
type mosqSub struct {
	cmd      *exec.Cmd
	out, err *testutil.SyncBuffer
	done     chan error
}

func startMosqSub(t *testing.T, bin string, args ...string) *mosqSub {
	t.Helper()
	s := &mosqSub{cmd: exec.Command(bin, args...), out: &testutil.SyncBuffer{}, err: &testutil.SyncBuffer{}, done: make(chan error, 1)}
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.err
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start mosquitto_sub: %v", err)
	}
	go func() { s.done <- s.cmd.Wait() }()
	t.Cleanup(func() {
		_ = s.cmd.Process.Kill()
		<-s.done
	})
	return s
}

// waitLine waits until the output holds line and returns the lines so far.
func (s *mosqSub) waitLine(t *testing.T, line string) []string {
	t.Helper()
	var lines []string
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		select {
		case err := <-s.done:
			s.done <- err
			t.Fatalf("mosquitto_sub exited (%v) before %q; stdout %q, stderr %q", err, line, s.out.String(), s.err.String())
		default:
		}
		lines = strings.Split(strings.TrimSpace(s.out.String()), "\n")
		if !slices.Contains(lines, line) {
			return fmt.Errorf("no %q in %q (stderr %q)", line, lines, s.err.String())
		}
		return nil
	})
	return lines
}

func mosqPub(t *testing.T, bin, addr string, args ...string) {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, append([]string{"-h", host, "-p", port, "-q", "1"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("mosquitto_pub %v: %v: %s", args, err, out)
	}
}

func hostPort(addr string) []string {
	host, port, _ := net.SplitHostPort(addr)
	return []string{"-h", host, "-p", port}
}

// With the stock Mosquitto clients, a # subscriber on --dev sees what it
// sees on a plain mochi server (a publish to sensors/1, retained
// messages, clearing them with --remove-retained), over MQTT 5 and
// 3.1.1, and never a direct message of another user; signed in as a
// user it also gets its own.
func TestDevModeMosquittoClients(t *testing.T) {
	subBin, pubBin := mosquittoClients(t)
	plain := startPlainMochi(t)
	n := nodetest.StartNode(t, nodetest.WithDev())
	dev := strings.TrimPrefix(n.MQTTURL, "tcp://")
	aliceTok, bobTok := n.NewUser(t, "alice"), n.NewUser(t, "bob")
	bob := mustConnectV5(t, n.MQTTURL, "bob", "d1", bobTok)

	// dm is sent on the dev node between sensors/1 and the barrier.
	scenario := func(addr, version string, dm func(i int)) []string {
		ready, barrier := "ready/"+version, "barrier/"+version
		mosqPub(t, pubBin, addr, "-r", "-t", ready, "-m", "1")
		s := startMosqSub(t, subBin, append(hostPort(addr), "-V", version, "-q", "1", "-v", "-t", "#")...)
		s.waitLine(t, ready+" 1") // retained: the subscription is in force
		mosqPub(t, pubBin, addr, "-t", "sensors/1", "-m", "21.5")
		if dm != nil {
			dm(0)
		}
		mosqPub(t, pubBin, addr, "-t", barrier, "-m", "end")
		lines := s.waitLine(t, barrier+" end")
		// Retained messages come in the retained store's (map) order.
		slices.Sort(lines)
		return slices.Compact(lines) // a retained message may also come live once (mochi delivers after the PUBACK)
	}
	for i, version := range []string{"mqttv5", "mqttv311"} {
		want := scenario(plain, version, nil)
		got := scenario(dev, version, func(int) {
			if code, _ := bob.Pub(t, "user/alice/newMessage", 1, textMsg(fmt.Sprintf("mosq-%d", i), "secret")); code != 0 {
				t.Fatalf("direct message: %#x", code)
			}
		})
		if !slices.Contains(want, "sensors/1 21.5") || strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("%s: mosquitto_sub -t '#' on --dev:\n  %s\non plain mochi:\n  %s", version, strings.Join(got, "\n  "), strings.Join(want, "\n  "))
		}
	}

	// Signed in as alice: her own direct messages come too, bob's copy
	// (user/bob/newMessage) does not.
	host, port, _ := net.SplitHostPort(dev)
	as := startMosqSub(t, subBin, "-h", host, "-p", port, "-V", "mqttv5", "-q", "1", "-v", "-t", "#",
		"-i", "alice/mosquitto", "-u", "alice", "-P", aliceTok)
	as.waitLine(t, "ready/mqttv5 1")
	if code, _ := bob.Pub(t, "user/alice/newMessage", 1, textMsg("mosq-alice", "hello alice")); code != 0 {
		t.Fatalf("direct message: %#x", code)
	}
	mosqPub(t, pubBin, dev, "-t", "barrier/alice", "-m", "end")
	lines := as.waitLine(t, "barrier/alice end")
	var own bool
	for _, l := range lines {
		own = own || strings.HasPrefix(l, "user/alice/newMessage ") && strings.Contains(l, `"hello alice"`)
		if strings.HasPrefix(l, "user/bob/") || strings.Contains(l, "secret") {
			t.Errorf("alice's # got %s", l)
		}
	}
	if !own {
		t.Errorf("alice's # did not get her direct message: %q", lines)
	}

	// Clearing retained messages: mosquitto_sub --remove-retained on #
	// leaves none behind (on --dev, none that the client could see).
	for _, addr := range []string{plain, dev} {
		mosqPub(t, pubBin, addr, "-r", "-t", "sensors/2", "-m", "kept")
		rm := startMosqSub(t, subBin, append(hostPort(addr), "-V", "mqttv5", "-v", "-t", "#", "--remove-retained", "-W", "1")...)
		rm.waitLine(t, "sensors/2 kept")
		select {
		case <-rm.done:
			rm.done <- nil
		case <-time.After(10 * time.Second):
			t.Fatal("mosquitto_sub -W 1 did not exit")
		}
		check, col := dialCollector(t, addr, "retained-check")
		subscribeAll(t, check, "#")
		mustPublish(t, check, "barrier/check", "-", false)
		if got := describe(col.until(t, "barrier/check")); got != `[]` {
			t.Errorf("%s: retained after --remove-retained: %s", addr, got)
		}
	}
}

// A 3.1.1 connection the node closes is closed, with no DISCONNECT
// packet (MQTT 3.1.1 has none from the server; mochi patch 62): the
// stock mosquitto_pub, refused a QoS 1 publish on a chat topic (closed,
// as 3.1.1 has no negative PUBACK), says the connection was lost. Before,
// it said "A network protocol error occurred when communicating with
// the broker." (The same close ends a 3.1.1 client taken over, or on a
// node cut off from its cluster: mochi's TestNoDisconnectPacketToAV311Client.)
func TestMosquittoV311ClosedWithoutAProtocolError(t *testing.T) {
	_, pubBin := mosquittoClients(t)
	n := nodetest.StartNode(t, nodetest.WithDev())
	addr := strings.TrimPrefix(n.MQTTURL, "tcp://")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, pubBin, append(hostPort(addr), "-V", "mqttv311", "-q", "1", "-i", "p1",
		"-t", "user/bob/newMessage", "-m", "hi")...).CombinedOutput()
	if err == nil || strings.Contains(string(out), "protocol error") || !strings.Contains(string(out), "connection was lost") {
		t.Errorf("mosquitto_pub -V mqttv311 refused on user/bob/newMessage: %v: %q, want a failure saying the connection was lost", err, out)
	}
}
