package cluster

import (
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/edgechat/edgechat/internal/testutil"
)

// A follower's proposals complete through commit notices: with
// CommitTimeout an hour, only an announcement tells the follower that its
// forwarded entry committed, and the leader now sends notices (no log
// entry) instead of appending a barrier per announcement.
func TestCommitNoticesTellFollowers(t *testing.T) {
	ms := startClusterWith(t, 3, func(c *Config) { c.CommitTimeout = time.Hour })
	leader := leaderOf(t, ms)
	follower := followerOf(ms, leader)
	for i := range 5 {
		proposeKeys(t, follower, fmt.Sprintf("notice-%d", i))
	}
	waitKeys(t, ms, "notice-4")
	// Many at once from every node: commits that one follower
	// acknowledged before the other. A notice names only what the
	// follower acknowledged, so none is refused (a refusal is a warning
	// in the follower's log, and a barrier).
	var keys []string
	for i := range 100 {
		keys = append(keys, fmt.Sprintf("burst-%d", i))
	}
	for _, m := range ms {
		proposeKeys(t, m, keys...)
	}
	waitKeys(t, ms, keys...)
	metric := func(result string) float64 {
		v, _ := testutil.MetricValue(t, leader.reg, "edgechat_raft_commit_notices_total", map[string]string{"result": result})
		return v
	}
	if taken := metric("taken"); taken < 1 {
		t.Errorf("commit notices taken = %v, want at least 1", taken)
	}
	if refused := metric("refused"); refused != 0 {
		t.Errorf("commit notices refused = %v, want 0", refused)
	}
}

// A notice moves a follower's commit index only when the follower holds
// the committed entry with the term the notice names (Raft's log
// matching): one for an entry it does not have, or with another term,
// is refused; the right one is taken. And only the leader sends them.
func TestCommitNoticeNeedsTheEntry(t *testing.T) {
	ms := startClusterWith(t, 3, func(c *Config) { c.CommitTimeout = time.Hour })
	leader := leaderOf(t, ms)
	follower := followerOf(ms, leader)
	proposeKeys(t, follower, "settled")
	waitKeys(t, ms, "settled")

	if follower.tellCommit() {
		t.Error("a follower sent commit notices")
	}

	term := leader.raft.CurrentTerm()
	var last uint64
	testutil.CheckFor(t, 5*time.Second, time.Millisecond, func() error {
		last = follower.raft.LastIndex()
		if c := follower.raft.CommitIndex(); c != last {
			return fmt.Errorf("follower commit %d, last %d", c, last)
		}
		return nil
	})
	var l raft.Log
	if err := follower.wal.GetLog(last, &l); err != nil {
		t.Fatal(err)
	}
	id := raft.ServerID(follower.name)
	addr := raft.ServerAddress(follower.addr)
	for _, c := range []struct {
		name string
		a    noticeArgs
		want bool
	}{
		{"an entry it does not hold", noticeArgs{term: term, index: last + 10, indexTerm: l.Term}, false},
		{"another term at its entry", noticeArgs{term: term, index: last, indexTerm: l.Term + 1}, false},
		{"its entry", noticeArgs{term: term, index: last, indexTerm: l.Term}, true},
	} {
		held, err := leader.sendNotice(id, addr, c.a)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if held != c.want {
			t.Errorf("%s: held = %v, want %v", c.name, held, c.want)
		}
		if got := follower.raft.CommitIndex(); got != last {
			t.Errorf("%s: follower commit index %d, want %d", c.name, got, last)
		}
	}
}

// A follower is told only of entries it acknowledged in the leader's
// term: a notice naming an entry it does not hold yet would be refused
// (a warning in its log, and a barrier). Once its acknowledgement of a
// later committed entry comes, that entry is due.
func TestNoticeNamesOnlyAcknowledgedEntries(t *testing.T) {
	for _, c := range []struct {
		name string
		p    noticePeer
		want uint64 // 0: nothing due
	}{
		{"acknowledged less than committed", noticePeer{term: 2, commit: 10, ackTerm: 2, acked: 7}, 7},
		{"acknowledged more than committed", noticePeer{term: 2, commit: 10, ackTerm: 2, acked: 12}, 10},
		{"already told", noticePeer{term: 2, commit: 10, ackTerm: 2, acked: 12, told: 10}, 0},
		{"acknowledged in another term", noticePeer{term: 3, commit: 10, ackTerm: 2, acked: 12}, 0},
		{"nothing acknowledged", noticePeer{term: 2, commit: 10}, 0},
		{"queued already", noticePeer{term: 2, commit: 10, ackTerm: 2, acked: 12, pending: true, want: noticeArgs{term: 2, index: 10}}, 0},
	} {
		got, ok := c.p.due()
		if !ok {
			got = 0
		}
		if got != c.want {
			t.Errorf("%s: due %d, want %d", c.name, got, c.want)
		}
	}
}
