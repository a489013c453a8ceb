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
// catchUpInterval: each makes Raft send the next batch. A check during
// which the log grew appends nothing: under load a follower is always an
// entry or two behind, and the new entries drive replication already
// (a barrier there cost every node a log write and fsync about every
// 20 ms while the load lasted); it looks again after catchUpCooldown.
// An idle cluster with followers in step does none of this.

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
	for {
		c.mu.Lock()
		c.again = false
		c.mu.Unlock()
		pace := catchUpCooldown
		if n.IsLeader() {
			last := n.raft.LastIndex()
			switch {
			case !n.followerBehind(last):
			case n.raft.LastIndex() != last:
				// The log grew while followers were asked: the new
				// entries make Raft send to every follower anyway, and a
				// follower is always a little behind under load, so a
				// barrier now would only add a log write on every node.
				// Look again once the load may have stopped.
				c.mu.Lock()
				c.again = true
				c.mu.Unlock()
			default:
				_ = n.awaitFuture(context.Background(), n.raft.Barrier(applyTimeout))
				n.m.catchUps.Inc()
				pace = catchUpInterval
				c.mu.Lock()
				c.again = true // check again after the pause
				c.mu.Unlock()
			}
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

// followerBehind asks every other voter for its last log index; true
// when one that answers is behind last (the leader's). A follower that does not
// answer is not waited for: when its heartbeats resume, Raft's
// observation kicks a new check.
func (n *Raft) followerBehind(last uint64) bool {
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		behind bool
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
			if r.LastIndex < last {
				mu.Lock()
				behind = true
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return behind
}
