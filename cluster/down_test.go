package cluster

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/internal/testutil/delayproxy"
)

// downIn is who m's Members report down.
func downIn(m *member) map[string]bool {
	out := map[string]bool{}
	for _, mb := range m.Members() {
		if mb.Down {
			out[mb.Name] = true
		}
	}
	return out
}

// gaugeValue reads an unlabelled gauge of m's registry.
func gaugeValue(t testing.TB, m *member, name string) float64 {
	t.Helper()
	mfs, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no gauge %s", name)
	return 0
}

// wantDown waits until every running member of ms reports exactly down
// as down.
func wantDown(t testing.TB, ms []*member, down ...string) {
	t.Helper()
	checkFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		for _, m := range running(ms) {
			got := downIn(m)
			if len(got) != len(down) {
				return fmt.Errorf("%s reports down %v, want %v", m.name, got, down)
			}
			for _, d := range down {
				if !got[d] {
					return fmt.Errorf("%s reports down %v, want %v", m.name, got, down)
				}
			}
		}
		return nil
	})
}

// A member that stops answering (and stays a member) is reported down
// on every node once the leader has not heard from it for DownAfter, and
// up again once it answers; so is a leader that dies, by the next one.
// A node cut off from the others reports itself down. Before: Members
// had no such flag; what is placed on members by hashing (presence
// homes) stayed on a dead member until it was removed.
func TestMembersThatDoNotAnswerAreReportedDown(t *testing.T) {
	tweak := func(c *Config) { c.DownAfter = time.Second }
	ms := startClusterWith(t, 3, tweak)
	wantDown(t, ms)
	leader := leaderOf(t, ms)
	f := followerOf(ms, leader)

	f.stop(t)
	wantDown(t, ms, f.name)
	if g := gaugeValue(t, leader, "edgechat_cluster_members_down"); g != 1 {
		t.Fatalf("edgechat_cluster_members_down on the leader: %v, want 1", g)
	}
	f.start(t, f.addr, tweak)
	wantDown(t, ms)

	// The leader dies: the next one marks it down.
	leader.stop(t)
	wantDown(t, ms, leader.name)
	leader.start(t, leader.addr, tweak)
	wantDown(t, ms)

	// A survivor of a cluster that lost its quorum does not count itself
	// down (nobody can commit a mark; nothing moved): one follower is
	// marked down, then the leader stops.
	leader = leaderOf(t, ms)
	f = followerOf(ms, leader)
	f.stop(t)
	wantDown(t, ms, f.name)
	lone := followerOf(ms, leader)
	leader.stop(t)
	checkFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		if d := time.Since(lone.raft.LastContact()); d < 3*time.Second {
			return fmt.Errorf("%s heard from a leader %v ago", lone.name, d)
		}
		return nil
	})
	if got := downIn(lone); len(got) != 1 || !got[f.name] {
		t.Fatalf("%s, alone without a quorum, reports down %v, want only %s", lone.name, got, f.name)
	}
	// Its clients it sends elsewhere all the same (CutOff): it cannot
	// tell this from being cut off itself while f came back and formed
	// a quorum with the leader, committing what it never gets.
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if !lone.CutOff() || !lone.CutOffNow() {
			return fmt.Errorf("%s, no leader heard for %v, does not count itself cut off (CutOff %v, CutOffNow %v)",
				lone.name, time.Since(lone.raft.LastContact()).Round(time.Millisecond), lone.CutOff(), lone.CutOffNow())
		}
		return nil
	})
}

// A member cut off from the others while running (here: nothing reaches
// it; it still reaches them) is marked down by the leader and counts
// itself down too (it cannot learn the mark); once it is reached again
// every node reports it up.
func TestACutOffMemberIsDownInEveryView(t *testing.T) {
	tweak := func(c *Config) { c.DownAfter = time.Second }
	ms := startClusterWith(t, 2, tweak)
	p, err := delayproxy.New("", 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	cut := startMember(t, "n3", func(c *Config) {
		tweak(c)
		c.Join = []string{ms[0].addr}
		c.AdvertiseAddr = p.Addr()
	})
	p.SetTarget(cut.mux.ln.Addr().String())
	ms = append(ms, cut)
	waitVoters(t, ms, 3)
	wantDown(t, ms)

	p.SetCut(true)
	wantDown(t, ms, "n3")
	p.SetCut(false)
	wantDown(t, ms)
}

// A node that reads itself down (here: it restarted and has not heard
// from a leader yet, as the presence service reads its members while
// the node starts) must announce (MembersChanged) when that reverses,
// whenever the leader is heard: a reader that saw "down" otherwise keeps
// it for good. Here the leader is heard before Run (the node serves Raft
// from New on); the restarted node's state is a snapshot, so nothing
// replayed announces a change by chance. Before: Members() computed the
// node's own Down afresh at every call while only watchDown's ticks
// announced changes of it, from what they had seen themselves; the
// first tick saw the node up already, so nothing was announced.
func TestASelfDownThatEndsIsAnnounced(t *testing.T) {
	never := func(c *Config) { c.DownAfter = -1 } // n1 and n2 mark nobody: only n3's own view moves
	ms := startClusterWith(t, 2, never)
	p, err := delayproxy.New("", 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	tweak := func(c *Config) {
		c.DownAfter = time.Second
		c.AdvertiseAddr = p.Addr()
	}
	n3 := startMember(t, "n3", func(c *Config) {
		tweak(c)
		c.Join = []string{ms[0].addr}
	})
	bind := n3.mux.ln.Addr().String()
	p.SetTarget(bind)
	waitVoters(t, append(ms, n3), 3)
	if err := n3.raft.Snapshot().Error(); err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	p.SetCut(true) // nothing reaches n3 once it restarts, until it is restored below
	n3.stop(t)

	// n3 again, built but not running yet.
	db := openDB(t, filepath.Join(n3.dir, "badger"))
	f := fsm.New(db, testLogger(t))
	registerTestHandlers(f)
	cfg := fastConfig(t, nodeOpts{dataDir: n3.dir, tweak: func(c *Config) {
		c.NodeName = "n3"
		c.BindAddr = bind
		multiTimeouts(c)
		tweak(c)
	}})
	cfg.Registerer = prometheus.NewRegistry()
	n, err := New(cfg, f)
	if err != nil {
		_ = db.Close()
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	running := false
	t.Cleanup(func() {
		if !running {
			go func() { done <- n.Run(ctx) }()
		}
		cancel()
		<-done
		_ = db.Close()
	})

	changed := n.MembersChanged()
	if !downIn(&member{testNode: &testNode{Raft: n}})["n3"] {
		t.Fatalf("n3, restarted and cut off, reports down %v; want itself", downIn(&member{testNode: &testNode{Raft: n}}))
	}
	p.SetCut(false)
	checkFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		if n.raft.LastContact().IsZero() {
			return fmt.Errorf("n3 has not heard from the leader yet")
		}
		return nil
	})
	running = true
	go func() { done <- n.Run(ctx) }()
	checkFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		if d := downIn(&member{testNode: &testNode{Raft: n}}); len(d) != 0 {
			return fmt.Errorf("n3 reports down %v", d)
		}
		return nil
	})
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		select {
		case <-changed:
			return nil
		default:
			return fmt.Errorf("n3 reports itself up again, and MembersChanged has not fired since it reported itself down")
		}
	})
}
