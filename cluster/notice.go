package cluster

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// Commit notices: telling a follower the commit index without a log entry.
//
// The announcer (announce.go) used to append a Raft barrier for every
// commit a follower waited for: the barrier's AppendEntries carried the
// commit index. But a barrier is a log entry like any other: a log write
// and fsync on the leader, then on every follower (a follower stores the
// entries of an AppendEntries before it takes the commit index from it),
// then an apply on every node. At 1,000 msg/s on three nodes a third of
// all entries were barriers, and a follower's publish waited for the
// barrier's two fsyncs in a row after its own entry had committed.
//
// A commit notice is the AppendEntries Raft itself sends when it has
// nothing new for a follower (after CommitTimeout): no entries,
// PrevLogEntry/PrevLogTerm = the committed entry X and its term,
// LeaderCommitIndex = X, in the leader's current term. The follower
// handles it exactly as one from Raft's replication: it checks that its
// log holds X with that term (by Raft's log matching property its log then
// equals the leader's up to X) and only then takes X as committed, so it
// applies nothing the leader did not commit; a follower that does not hold
// X yet, or holds another term there, answers "no" and changes nothing.
// Nothing is written to any log and no follower fsyncs for it. The
// follower's answer is only used to fall back: a follower that said "no"
// gets a barrier as before, through Raft's own replication.
//
// Safety of the term: the notice carries the term the leader read before
// and after checking that it is the leader, so it never claims a term this
// node did not lead; a follower already in a later term refuses it. The
// commit index itself is true whatever happened since (X committed).
// Rolling upgrades: it is a plain AppendEntries of hashicorp/raft's wire
// format, which every version of the node accepts.

// noticeRetryWait is how long a follower's notice sender waits after the
// transport failed to reach it before it sends the newest index again: a
// follower that is down is fed by Raft's replication and the catch-up
// (catchup.go) once it is back, and a dial per commit would only cost CPU.
const noticeRetryWait = 100 * time.Millisecond

// noticeArgs is what one notice tells: the leader's term, the committed
// index and that entry's term.
type noticeArgs struct {
	term, index, indexTerm uint64
}

// commitNotices keeps one sender per follower, each with at most one
// notice in flight: notices posted meanwhile coalesce into the newest.
type commitNotices struct {
	mu    sync.Mutex
	peers map[raft.ServerID]*noticePeer
}

type noticePeer struct {
	addr    raft.ServerAddress
	want    noticeArgs // newest notice posted
	pending bool       // want not sent yet
	busy    bool       // a sender runs for this follower
}

// tellCommit sends every other member of the configuration a notice of
// the leader's commit index. false: nothing was sent (not the leader, or
// the entry could not be read) and the caller appends a barrier instead.
func (n *Raft) tellCommit() bool {
	term := n.raft.CurrentTerm()
	if n.raft.State() != raft.Leader {
		return false
	}
	idx := n.raft.CommitIndex()
	if idx == 0 || n.raft.CurrentTerm() != term {
		return false
	}
	var l raft.Log
	if err := n.logs.GetLog(idx, &l); err != nil {
		return false
	}
	a := noticeArgs{term: term, index: idx, indexTerm: l.Term}
	self := raft.ServerID(n.cfg.NodeName)
	for _, s := range n.raft.GetConfiguration().Configuration().Servers {
		if s.ID != self {
			n.postNotice(s.ID, s.Address, a)
		}
	}
	return true
}

// postNotice hands a to id's sender, starting it when none runs.
func (n *Raft) postNotice(id raft.ServerID, addr raft.ServerAddress, a noticeArgs) {
	c := &n.notices
	c.mu.Lock()
	if c.peers == nil {
		c.peers = make(map[raft.ServerID]*noticePeer)
	}
	p := c.peers[id]
	if p == nil {
		p = &noticePeer{}
		c.peers[id] = p
	}
	p.addr = addr
	if a.term > p.want.term || a.index > p.want.index {
		p.want = a
		p.pending = true
	}
	if p.busy || !p.pending {
		c.mu.Unlock()
		return
	}
	p.busy = true
	c.mu.Unlock()
	if !n.helpers.start(func() { n.runNotices(id, p) }) {
		c.mu.Lock()
		p.busy = false
		c.mu.Unlock()
	}
}

// runNotices sends id the newest notice until none is pending.
func (n *Raft) runNotices(id raft.ServerID, p *noticePeer) {
	c := &n.notices
	for {
		c.mu.Lock()
		if !p.pending {
			p.busy = false
			c.mu.Unlock()
			return
		}
		a, addr := p.want, p.addr
		p.pending = false
		c.mu.Unlock()

		held, err := n.sendNotice(id, addr, a)
		switch {
		case err != nil:
			n.m.noticeFailures.Inc()
			select {
			case <-time.After(noticeRetryWait):
			case <-n.stopping:
			}
		case !held:
			// The follower does not hold the entry yet (its
			// AppendEntries is still on its way) or holds another
			// term there: a barrier's AppendEntries, sent by Raft's
			// replication after the entries it lacks, tells it.
			n.m.noticeFallbacks.Inc()
			if n.raft.State() == raft.Leader {
				_ = n.awaitFuture(context.Background(), n.raft.Barrier(applyTimeout))
				n.m.announcements.Inc()
			}
		default:
			n.m.notices.Inc()
		}
	}
}

// sendNotice sends one notice to a follower. held reports whether the
// follower took it (it holds the entry with that term); a refusal because
// the follower is in a later term counts as taken (there is nothing to
// fall back to: this node is no longer its leader).
func (n *Raft) sendNotice(id raft.ServerID, addr raft.ServerAddress, a noticeArgs) (held bool, err error) {
	self := raft.ServerID(n.cfg.NodeName)
	enc := n.trans.EncodePeer(self, n.trans.LocalAddr())
	req := raft.AppendEntriesRequest{
		// raft.DefaultConfig's ProtocolVersion, which New keeps.
		RPCHeader:         raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte(self), Addr: enc},
		Term:              a.term,
		Leader:            enc, // for versions that read the leader from here
		PrevLogEntry:      a.index,
		PrevLogTerm:       a.indexTerm,
		LeaderCommitIndex: a.index,
	}
	// The transport cannot be cancelled (a dial to a partitioned peer
	// waits its timeout): the node's shutdown does not wait for it.
	resp := new(raft.AppendEntriesResponse)
	done := make(chan error, 1)
	go func() { done <- n.trans.AppendEntries(id, addr, &req, resp) }()
	select {
	case err := <-done:
		if err != nil {
			return false, fmt.Errorf("cluster: commit notice to %s: %w", id, err)
		}
	case <-n.stopping:
		return false, ErrStopped
	}
	return resp.Success || resp.Term > a.term, nil
}
