package cluster

import (
	"context"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// Feeding a follower that is behind while the leader is idle.
//
// Once a follower has caught up to the index Raft aimed for, Raft
// replicates to it in pipeline mode, and a pipeline sends only when a new
// entry is appended or CommitTimeout passes, at most MaxAppendEntries
// entries at a time. Under load new entries keep it going. But a follower
// that comes back while the cluster is busy catches up to the index the
// leader had when the catch-up began; if the load then stops, what was
// appended meanwhile would trickle over one batch per CommitTimeout (a
// restarted node 1,000 entries behind took half a minute). So the leader
// checks, when a follower resumes or joins and when activity pauses,
// whether any follower's log is behind its own (asking it over the
// cluster RPC), and while one is it appends a barrier every
// catchUpInterval: each makes Raft send the next batch. A follower is
// fed only when it is still behind the index the leader had one
// interval earlier and the log did not grow meanwhile: under load a
// follower is always an entry or two behind (entries in flight), and new
// entries drive replication anyway. Judged against the leader's newest
// index alone, the check appended a barrier (a log write and fsync on
// every node) about every 20 ms for as long as any load lasted. An idle
// cluster with followers in step does none of this.

const (
	// catchUpInterval paces the barriers (and the checks) while a
	// follower is behind: MaxAppendEntries entries per interval.
	catchUpInterval = 20 * time.Millisecond
	// catchUpCooldown is the least time between two checks that found
	// every follower in step, so that bursts of activity ask followers
	// at most a few times a second.
	catchUpCooldown = 200 * time.Millisecond
	// maxAppendEntries is how many entries one AppendEntries carries
	// (Raft's default is 64).
	maxAppendEntries = 512
)

type catchUp struct {
	mu      sync.Mutex
	running bool
	again   bool
}

// kickCatchUp asks the leader to check whether a follower is behind and,
// if so, to feed it until it is not. It never blocks.
func (n *Raft) kickCatchUp() {
	c := &n.catchUp
	c.mu.Lock()
	if c.running {
		c.again = true
		c.mu.Unlock()
		return
	}
	c.running = true
	c.mu.Unlock()
	if !n.helpers.start(n.runCatchUp) {
		c.mu.Lock()
		c.running = false
		c.mu.Unlock()
	}
}

func (n *Raft) runCatchUp() {
	c := &n.catchUp
	// target is the leader's last index at the previous check of this
	// run, when that check found a follower behind it (0: none).
	var target uint64
	for {
		c.mu.Lock()
		c.again = false
		c.mu.Unlock()
		pace := catchUpCooldown
		again := false
		if n.IsLeader() {
			last := n.raft.LastIndex()
			behindLast, behindTarget := n.followerBehind(last, target)
			var feed bool
			feed, again, target = catchUpStep(behindLast, behindTarget, n.raft.LastIndex() != last, target, last)
			if feed {
				_ = n.awaitFuture(context.Background(), n.raft.Barrier(applyTimeout))
				n.m.catchUps.Inc()
			}
			if target != 0 {
				pace = catchUpInterval
			}
		}
		if again {
			c.mu.Lock()
			c.again = true
			c.mu.Unlock()
		}
		t := time.NewTimer(pace)
		select {
		case <-t.C:
		case <-n.stopping:
			t.Stop()
			c.mu.Lock()
			c.running = false
			c.mu.Unlock()
			return
		}
		c.mu.Lock()
		if !c.again {
			c.running = false
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
	}
}

// catchUpStep decides what one check of runCatchUp does, from whether a
// follower is behind the leader's last index (behindLast) and behind the
// index remembered at the previous check (behindTarget; target is 0 when
// none), and whether the log grew during the check: feed (append a
// barrier), again (check again after a pause) and the index to remember
// for the next check (0: none; otherwise the next check comes after
// catchUpInterval instead of catchUpCooldown).
func catchUpStep(behindLast, behindTarget, grew bool, target, last uint64) (feed, again bool, next uint64) {
	switch {
	case !behindLast:
		return false, false, 0
	case grew:
		// The new entries make Raft send to every follower anyway. Look
		// again once the load may have stopped.
		return false, true, 0
	case target != 0 && behindTarget:
		// Still behind what the leader had a catchUpInterval ago, and
		// nothing new to send: feed it.
		return true, true, last
	case target != 0:
		// It got what the leader had last time: it keeps up, the newest
		// entries are on their way.
		return false, true, 0
	default:
		// Behind the newest entries only, which may be in flight (a
		// follower always is, a moment, under load): a barrier now would
		// cost every node a log write for nothing. Look again shortly.
		return false, true, last
	}
}

// followerBehind asks every other voter for its last log index and
// reports whether one that answers is behind last (the leader's) and
// whether one is behind target (never, when target is 0). A follower
// that does not answer is not waited for: when its heartbeats resume,
// Raft's observation kicks a new check.
func (n *Raft) followerBehind(last, target uint64) (behindLast, behindTarget bool) {
	var (
		wg sync.WaitGroup
		mu sync.Mutex
	)
	for _, s := range n.configuration() {
		if s.ID == raft.ServerID(n.cfg.NodeName) {
			continue
		}
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(n.stopCtx, statusInterval/2)
			defer cancel()
			var r InfoReply
			if err := n.Call(ctx, string(s.Address), clusterService+".Info", &InfoArgs{}, &r); err != nil {
				return
			}
			n.statMu.Lock()
			n.peerStat[string(s.ID)] = peerStatus{lastIndex: r.LastIndex, at: time.Now()}
			n.statMu.Unlock()
			mu.Lock()
			behindLast = behindLast || r.LastIndex < last
			behindTarget = behindTarget || r.LastIndex < target
			mu.Unlock()
		})
	}
	wg.Wait()
	return behindLast, behindTarget
}
