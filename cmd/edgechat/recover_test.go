package main

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// TestRecoverASurvivorOfALostMajority: a 3-node cluster of real
// processes takes messages over MQTT; two nodes are SIGKILLed for good
// (their data gone); the survivor commits nothing. `edgechat recover`
// is refused while it runs and on a directory without Raft state; on
// the stopped survivor it makes it the only voter, and once more does
// nothing. Started again (with its old --join naming a dead node) it
// leads alone: every acknowledged message is in history once, a new one
// commits, and a fresh node joins it and gets them all.
func TestRecoverASurvivorOfALostMajority(t *testing.T) {
	if testing.Short() {
		t.Skip("runs real processes")
	}
	c := startCluster3(t)
	bin := c.bin
	tokens := c.addUsers("a long password", "alice", "bob")

	// Messages through every node, each acknowledged (PUBACK 0).
	var acked []string
	for i := range 3 {
		cl := dialV5(t, c.proc(i).mqtt, fmt.Sprintf("alice/n%d", i+1), "alice", tokens["alice"])
		for k := range 10 {
			cid := fmt.Sprintf("via-n%d-%d", i+1, k)
			publishAcked(t, cl, "bob", cid)
			acked = append(acked, cid)
		}
		_ = cl.Disconnect(&paho.Disconnect{})
	}
	lead, err := c.leader()
	if err != nil {
		t.Fatal(err)
	}
	s := (lead + 1) % 3 // the survivor: a follower
	// The operator recovers the survivor that holds what was committed
	// (docs: the one with the highest last index); here: wait until it
	// has every acknowledged message.
	checkFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		return holdsOnce(c.proc(s).http, tokens["bob"], acked)
	})
	for i := range 3 {
		if i != s {
			c.proc(i).stop(t, syscall.SIGKILL)
		}
	}
	checkFor(t, 20*time.Second, 100*time.Millisecond, func() error {
		if code := readyz(c.proc(s).http); code != http.StatusServiceUnavailable {
			return fmt.Errorf("the survivor alone: /readyz %d, want 503 (no quorum)", code)
		}
		return nil
	})

	dir := c.dirs[s]
	if out, err := runCLIErr(bin, "", "recover", "--data", dir); err == nil || !strings.Contains(err.Error(), "the node is running: stop it first") {
		t.Fatalf("recover on a running node's data: %v, %s; want refused: the node is running", err, out)
	}
	if _, err := runCLIErr(bin, "", "recover", "--data", t.TempDir()); err == nil || !strings.Contains(err.Error(), "no raft state") {
		t.Fatalf("recover on a directory without raft state: %v; want refused: no raft state", err)
	}
	old := c.proc(s)
	old.stop(t, syscall.SIGTERM)

	out := runCLI(t, bin, "", "recover", "--data", dir)
	self := fmt.Sprintf("n%d", s+1)
	for _, want := range []string{self + " is now the only voter", "n1 (Voter", "n2 (Voter", "n3 (Voter", "must NEVER start again with their old data"} {
		if !strings.Contains(out, want) {
			t.Errorf("recover said:\n%s\nwant %q", out, want)
		}
	}
	if out := runCLI(t, bin, "", "recover", "--data", dir); !strings.Contains(out, "nothing to do") {
		t.Errorf("recover again said:\n%s\nwant nothing to do", out)
	}

	join := ""
	if s != 0 {
		join = c.procs[0].cluster // as it was first started: the dead n1
	}
	p := startServe(t, bin, c.args(s, old.cluster, join)...)
	checkFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		if code := readyz(p.http); code != http.StatusOK {
			return fmt.Errorf("recovered %s: /readyz %d", self, code)
		}
		return nil
	})
	v, err := clusterStatus(bin, p.http, dir)
	if err != nil {
		t.Fatal(err)
	}
	if v.State != "Leader" || v.Leader != self || strings.Count(v.Raw, "\n") != 2 {
		t.Fatalf("recovered node's status:\n%s\nwant it the leader and the only member", v.Raw)
	}
	bob := mintToken(t, bin, dir, "bob", p)
	if err := holdsOnce(p.http, bob, acked); err != nil {
		t.Fatalf("after the recovery: %v", err)
	}
	cl := dialV5(t, p.mqtt, "alice/after", "alice", mintToken(t, bin, dir, "alice", p))
	publishAcked(t, cl, "bob", "after-recovery")
	acked = append(acked, "after-recovery")
	if err := holdsOnce(p.http, bob, acked); err != nil {
		t.Fatalf("after a new message: %v", err)
	}

	// A fresh node joins the recovered one and gets everything.
	n4 := startServe(t, bin, "--data", t.TempDir(), "--node-id", "n4", "--http-addr", "127.0.0.1:0", "--mqtt-addr", "127.0.0.1:0",
		"--cluster-addr", "127.0.0.1:0", "--mqtt-publish-rate", "off", "--join", p.cluster)
	checkFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		v, err := clusterStatus(bin, p.http, dir)
		if err != nil {
			return err
		}
		if !slices.ContainsFunc(strings.Split(v.Raw, "\n"), func(l string) bool {
			f := strings.Fields(l)
			return len(f) >= 3 && f[0] == "n4" && f[2] == "Voter"
		}) {
			return fmt.Errorf("n4 no voter yet:\n%s", v.Raw)
		}
		return holdsOnce(n4.http, bob, acked)
	})
}

// publishAcked publishes a durable DM and fails unless it is acknowledged.
func publishAcked(t *testing.T, cl *paho.Client, to, cid string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pr, err := cl.Publish(ctx, &paho.Publish{Topic: "user/" + to + "/newMessage", QoS: 1,
		Payload: fmt.Appendf(nil, `{"cid":%q,"type":"text","body":%q}`, cid, cid)})
	if err != nil || pr == nil || pr.ReasonCode != 0 {
		t.Fatalf("publish %s: %v %+v", cid, err, pr)
	}
}

// holdsOnce checks that the user's sync stream on the node has each cid
// exactly once, and nothing else.
func holdsOnce(httpURL, token string, cids []string) error {
	msgs, err := syncMessages(httpURL, token)
	if err != nil {
		return err
	}
	got := map[string]int{}
	for _, m := range msgs {
		got[m.CID]++
	}
	for _, cid := range cids {
		if got[cid] != 1 {
			return fmt.Errorf("%s: %s %d times in sync (of %d messages)", httpURL, cid, got[cid], len(msgs))
		}
	}
	if len(msgs) != len(cids) {
		return fmt.Errorf("%s: %d messages in sync, want %d", httpURL, len(msgs), len(cids))
	}
	return nil
}
