package main

import (
	"math/rand/v2"
	"os"
	"syscall"
	"testing"
	"time"
)

// TestChaosRandomSIGKILL (make test-chaos; EDGECHAT_CHAOS=1) keeps durable
// load on three nodes for EDGECHAT_CHAOS_DURATION (default 150s) while
// repeatedly killing a random node (leader or follower) with SIGKILL and
// restarting it on its data dir. At the end every acknowledged message is
// on every node exactly once, in per-sender order.
func TestChaosRandomSIGKILL(t *testing.T) {
	if os.Getenv("EDGECHAT_CHAOS") != "1" {
		t.Skip("chaos run: set EDGECHAT_CHAOS=1 (make test-chaos)")
	}
	dur := 150 * time.Second
	if d, err := time.ParseDuration(os.Getenv("EDGECHAT_CHAOS_DURATION")); err == nil && d > 0 {
		dur = d
	}
	c := startCluster3(t)
	names := []string{"snd1", "snd2", "snd3"}
	tokens := c.addUsers("a long password", append(names, "sink")...)
	l := startLoad(tokens, names, "sink", c.mqttAddrs)
	stopped := false
	defer func() {
		if !stopped {
			l.finish()
		}
	}()
	l.waitProgress(t, 50, 20*time.Second)
	deadline := time.Now().Add(dur)
	rounds, leaderKills := 0, 0
	var worstGap time.Duration
	for time.Now().Before(deadline) {
		i := rand.IntN(3)
		lead, _ := c.leader()
		t0 := time.Now()
		old := c.proc(i)
		old.stop(t, syscall.SIGKILL)
		// The other two keep committing.
		l.waitProgress(t, 20, 30*time.Second)
		p := startServe(t, c.bin, c.args(i, old.cluster, "")...)
		checkFor(t, 30*time.Second, 50*time.Millisecond, func() error {
			if readyz(p.http) != 200 {
				return errIncomplete
			}
			return nil
		})
		c.mu.Lock()
		c.procs[i] = p
		c.mu.Unlock()
		c.waitFormed(30 * time.Second)
		l.waitProgress(t, 50, 30*time.Second)
		gap := l.longestGap(t0, time.Now())
		worstGap = max(worstGap, gap)
		rounds++
		if lead == i {
			leaderKills++
		}
		t.Logf("round %d: killed n%d (leader: %v); longest gap between acknowledgements %v", rounds, i+1, lead == i, gap.Round(time.Millisecond))
	}
	l.finish()
	stopped = true
	for _, s := range l.senders {
		a, r, f, rc := s.snapshot()
		t.Logf("%s: %d acknowledged, %d refused, %d unanswered, %d reconnects", s.name, a, r, f, rc)
	}
	t.Logf("%d kills (%d of the leader); worst gap between acknowledgements %v", rounds, leaderKills, worstGap.Round(time.Millisecond))
	for i := range 3 {
		verifyAcked(t, c.proc(i).http, tokens["sink"], l.senders, 60*time.Second)
	}
}
