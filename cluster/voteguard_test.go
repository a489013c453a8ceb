package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/edgechat/edgechat/internal/testutil"
)

func votesRefused(t testing.TB, m *member) float64 {
	t.Helper()
	var d dto.Metric
	if err := m.m.votesRefused.Write(&d); err != nil {
		t.Fatal(err)
	}
	return d.GetCounter().GetValue()
}

// A member whose data directory was lost comes back empty under its name
// and address. While the one other node that held an acknowledged entry
// is down, it must not help a member that had fallen behind become
// leader: that leader's entries would overwrite the acknowledged one on
// the others when they return. Before the vote guard, the empty node
// granted its vote, the laggard led, and "acked" was gone from it for
// good (waitKeys below failed on n-laggard and the wiped node).
func TestAMemberThatLostItsDataDoesNotHelpElectALaggard(t *testing.T) {
	ms := startCluster(t, 3)
	leader := leaderOf(t, ms)
	var wiped, laggard *member
	for _, m := range ms {
		switch {
		case m == leader:
		case wiped == nil:
			wiped = m
		default:
			laggard = m
		}
	}
	laggard.stop(t)
	proposeKeys(t, leader, "acked") // committed by the leader and wiped
	wiped.stop(t)
	leader.stop(t)
	entries, err := os.ReadDir(wiped.dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(wiped.dir, e.Name())); err != nil {
			t.Fatal(err)
		}
	}

	laggard.restart(t)
	// Started as it was first started (BootstrapExpect and a member to
	// ask): it finds a cluster and joins it.
	wiped.start(t, wiped.addr, func(c *Config) {
		c.BootstrapExpect = 3
		c.Join = []string{laggard.addr}
	})
	if _, err := os.Stat(filepath.Join(wiped.dir, "raft", voteGuardFile)); err != nil {
		t.Fatalf("the empty node's vote guard is not on disk: %v", err)
	}
	// The laggard campaigns for as long as it is alone with the empty
	// node: wait for its third refused request, or for the leader it
	// must not become.
	checkFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		for _, m := range []*member{laggard, wiped} {
			if m.IsLeader() {
				return nil
			}
		}
		if n := votesRefused(t, wiped); n < 3 {
			return fmt.Errorf("%v vote requests refused", n)
		}
		return nil
	})
	for _, m := range []*member{laggard, wiped} {
		if m.IsLeader() {
			t.Fatalf("%s leads with the laggard's log: the wiped node voted", m.name)
		}
	}

	leader.restart(t)
	waitKeys(t, ms, "acked")
	proposeKeys(t, wiped, "after")
	waitKeys(t, ms, "after")
	// Caught up: it votes again, and says so on disk.
	checkFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		if wiped.votes.guarded() {
			return errors.New("still guarded")
		}
		if _, err := os.Stat(filepath.Join(wiped.dir, "raft", voteGuardFile)); !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("guard file: %v", err)
		}
		return nil
	})
}

// The guard's file keeps it on across a restart in the middle of the
// catch-up (the log is no longer empty then, but still short); a node
// with its state and no file has none; lifting removes the file.
func TestVoteGuardOnDisk(t *testing.T) {
	dir := t.TempDir()
	log := testutil.QuietLogger()
	if g, err := openVoteGuard(dir, false, log, nil); err != nil || g != nil {
		t.Fatalf("a node with its state: guard %v, %v", g, err)
	}
	g, err := openVoteGuard(dir, true, log, nil)
	if err != nil || !g.guarded() {
		t.Fatalf("a fresh node: guard %v, %v", g, err)
	}
	again, err := openVoteGuard(dir, false, log, nil)
	if err != nil || !again.guarded() {
		t.Fatalf("restarted before it caught up: guard %v, %v", again, err)
	}
	again.lift("test")
	if again.guarded() {
		t.Fatal("still guarded after lift")
	}
	if g, err := openVoteGuard(dir, false, log, nil); err != nil || g != nil {
		t.Fatalf("restarted after it caught up: guard %v, %v", g, err)
	}
}

// A guarded node needed for every majority must not keep its cluster
// from electing anyone: two voters, the joiner restarted with its guard
// still on (as after a restart in the middle of its catch-up) and a log
// shorter than the other's (an entry the other appended alone). Before
// the census the joiner refused the other, the other refused the joiner
// (shorter log), and no leader came, for good. The census asks the other
// voter, whose log is the candidate's own: the vote goes to Raft.
func TestAGuardedVoterNeededForEveryMajorityLetsTheUpToDateOneLead(t *testing.T) {
	first := startMember(t, "n1", func(c *Config) { c.Bootstrap = true })
	waitReady(t, first.Raft)
	joiner := startMember(t, "n2", func(c *Config) { c.Join = []string{first.addr} })
	ms := []*member{first, joiner}
	waitVoters(t, ms, 2)
	proposeKeys(t, first, "before")
	waitKeys(t, ms, "before")
	checkFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		if joiner.votes.guarded() {
			return errors.New("the joiner is still guarded")
		}
		return nil
	})
	joiner.stop(t)
	// The guard as a restart in the middle of the catch-up leaves it.
	if err := writeSynced(filepath.Join(joiner.dir, "raft", voteGuardFile)); err != nil {
		t.Fatal(err)
	}
	// An entry the first node appends alone (it cannot commit it).
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	_, _ = first.Propose(ctx, cmdPut, []byte("alone=v"))
	cancel()
	first.stop(t)

	first.restart(t)
	joiner.restartJoining(t, first.addr)
	if !joiner.votes.guarded() {
		t.Fatal("the joiner is not guarded after its restart")
	}
	leaderOf(t, ms)
	proposeKeys(t, joiner, "after")
	waitKeys(t, ms, "before", "after")
}
