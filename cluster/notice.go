package cluster

import (
	"context"
	"fmt"
	"sync"

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
// Nothing is written to any log and no follower fsyncs for it. Notices
// name only entries the follower has acknowledged (see commitNotices), so
// a "no" is not expected; if one comes, the follower gets a barrier as
// before, through Raft's own replication.
//
// Safety of the term: the notice carries the term the leader read before
// and after checking that it is the leader, so it never claims a term this
// node did not lead; a follower already in a later term refuses it. The
// commit index itself is true whatever happened since (X committed).
// Rolling upgrades: it is a plain AppendEntries of hashicorp/raft's wire
// format, which every version of the node accepts.

// noticeArgs is what one notice tells: the leader's term, the committed
// index and that entry's term.
type noticeArgs struct {
	term, index, indexTerm uint64
}

// commitNotices keeps, per follower, what it acknowledged and what it
// should be told, and one sender with at most one notice in flight:
// notices due meanwhile coalesce into the newest.
//
// A notice names an entry the follower acknowledged (ackTransport records
// every successful AppendEntries answer): one naming an entry it does not
// hold yet would be refused, and hashicorp/raft logs each refusal as a
// warning on the follower ("failed to get previous log"). So a follower
// is told min(commit index, its acknowledged index), and told again when
// its acknowledgement of a later committed entry arrives.
type commitNotices struct {
	mu    sync.Mutex
	peers map[raft.ServerID]*noticePeer
}

type noticePeer struct {
	addr             raft.ServerAddress
	ackTerm, acked   uint64 // highest index it acknowledged, in ackTerm
	term, commit     uint64 // the leader's term and commit index to tell
	told             uint64 // highest index told in term
	want             noticeArgs
	pending, running bool
}

// peer returns id's state; c.mu is held.
func (c *commitNotices) peer(id raft.ServerID) *noticePeer {
	if c.peers == nil {
		c.peers = make(map[raft.ServerID]*noticePeer)
	}
	p := c.peers[id]
	if p == nil {
		p = &noticePeer{}
		c.peers[id] = p
	}
	return p
}

// tellCommit tells every other member of the configuration the leader's
// commit index, as far as each acknowledged it. false: nothing could be
// done (not the leader) and the caller appends a barrier instead.
func (n *Raft) tellCommit() bool {
	term := n.raft.CurrentTerm()
	if n.raft.State() != raft.Leader {
		return false
	}
	idx := n.raft.CommitIndex()
	if idx == 0 || n.raft.CurrentTerm() != term {
		return false
	}
	self := raft.ServerID(n.cfg.NodeName)
	c := &n.notices
	for _, s := range n.raft.GetConfiguration().Configuration().Servers {
		if s.ID == self {
			continue
		}
		c.mu.Lock()
		p := c.peer(s.ID)
		p.addr = s.Address
		if term > p.term {
			p.term, p.commit, p.told = term, idx, 0
		} else if term == p.term && idx > p.commit {
			p.commit = idx
		}
		n.scheduleNotice(s.ID, p) // unlocks
	}
	return true
}

// noteAck records that follower id holds the log up to index as the
// leader of term sent it (an AppendEntries it answered with success), and
// sends it a notice if a commit it was not told of is now within it.
func (n *Raft) noteAck(id raft.ServerID, term, index uint64) {
	c := &n.notices
	c.mu.Lock()
	p := c.peer(id)
	if term > p.ackTerm || (term == p.ackTerm && index > p.acked) {
		p.ackTerm, p.acked = term, index
	}
	n.scheduleNotice(id, p) // unlocks
}

// due is the index p should be told now: the highest committed entry it
// acknowledged in the leader's term, if it was not told of it (or of a
// later one) already and no notice of it is queued.
func (p *noticePeer) due() (uint64, bool) {
	x := min(p.commit, p.acked)
	if p.term == 0 || p.ackTerm != p.term || x <= p.told || (p.pending && x <= p.want.index) {
		return 0, false
	}
	return x, true
}

// scheduleNotice queues a notice for p when one is due and starts its
// sender when none runs. c.mu is held on entry and released.
func (n *Raft) scheduleNotice(id raft.ServerID, p *noticePeer) {
	c := &n.notices
	x, ok := p.due()
	if !ok {
		c.mu.Unlock()
		return
	}
	p.want = noticeArgs{term: p.term, index: x}
	p.pending = true
	if p.running {
		c.mu.Unlock()
		return
	}
	p.running = true
	c.mu.Unlock()
	if !n.helpers.start(func() { n.runNotices(id, p) }) {
		c.mu.Lock()
		p.running = false
		c.mu.Unlock()
	}
}

// runNotices sends id the newest due notice until none is pending.
func (n *Raft) runNotices(id raft.ServerID, p *noticePeer) {
	c := &n.notices
	for {
		c.mu.Lock()
		if !p.pending {
			p.running = false
			c.mu.Unlock()
			return
		}
		a, addr := p.want, p.addr
		p.pending = false
		c.mu.Unlock()

		var l raft.Log
		if err := n.logs.GetLog(a.index, &l); err != nil {
			continue // compacted meanwhile: a later commit is told
		}
		a.indexTerm = l.Term
		held, err := n.sendNotice(id, addr, a)
		switch {
		case err != nil:
			// Not delivered (the follower is down, or this node is
			// stopping): nothing is retried. told did not move, so
			// the follower's next acknowledgement (when Raft's
			// replication reaches it again) or the next commit brings
			// the notice due then.
			n.m.noticeFailures.Inc()
		case !held:
			// Cannot happen for an entry it acknowledged in this term,
			// short of a bug: a barrier's AppendEntries tells it.
			n.m.noticeFallbacks.Inc()
			if n.raft.State() == raft.Leader {
				_ = n.awaitFuture(context.Background(), n.raft.Barrier(applyTimeout))
				n.m.announcements.Inc()
			}
		default:
			n.m.notices.Inc()
			c.mu.Lock()
			if a.term == p.term && a.index > p.told {
				p.told = a.index
			}
			c.mu.Unlock()
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
	n.calls.Go(func() { done <- n.trans.AppendEntries(id, addr, &req, resp) })
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

// ackTransport is the node's Raft transport with every successful
// AppendEntries answer reported to noteAck, so that notices name only
// entries the follower holds. Embedding the *NetworkTransport keeps the
// optional interfaces Raft looks for (WithClose, WithPeers, WithPreVote).
type ackTransport struct {
	*raft.NetworkTransport
	ack   func(id raft.ServerID, term, index uint64)
	guard *voteGuard // nil unless the node started without its state (Consumer, voteguard.go)
}

// acked reports what a successful answer to req means: the follower
// holds the leader's log up to its last entry (or PrevLogEntry when it
// carried none; 0 for a heartbeat, which checks nothing).
func (t *ackTransport) acked(id raft.ServerID, req *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) {
	if !resp.Success {
		return
	}
	idx := req.PrevLogEntry
	if k := len(req.Entries); k > 0 {
		idx = req.Entries[k-1].Index
	}
	if idx > 0 {
		t.ack(id, req.Term, idx)
	}
}

// AppendEntries is Raft's synchronous replication (before its pipeline
// starts, and while a follower catches up).
func (t *ackTransport) AppendEntries(id raft.ServerID, target raft.ServerAddress, req *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	err := t.NetworkTransport.AppendEntries(id, target, req, resp)
	if err == nil {
		t.acked(id, req, resp)
	}
	return err
}

// AppendEntriesPipeline wraps the pipeline's answers on their way to Raft.
func (t *ackTransport) AppendEntriesPipeline(id raft.ServerID, target raft.ServerAddress) (raft.AppendPipeline, error) {
	p, err := t.NetworkTransport.AppendEntriesPipeline(id, target)
	if err != nil {
		return nil, err
	}
	w := &ackPipeline{AppendPipeline: p, t: t, id: id, out: make(chan raft.AppendFuture), done: make(chan struct{})}
	go w.relay()
	return w, nil
}

type ackPipeline struct {
	raft.AppendPipeline
	t     *ackTransport
	id    raft.ServerID
	out   chan raft.AppendFuture
	done  chan struct{}
	close sync.Once
}

// relay passes the answers on in order, noting each success first.
func (w *ackPipeline) relay() {
	in := w.AppendPipeline.Consumer()
	for {
		select {
		case f := <-in:
			if f.Error() == nil {
				w.t.acked(w.id, f.Request(), f.Response())
			}
			select {
			case w.out <- f:
			case <-w.done:
				return
			}
		case <-w.done:
			return
		}
	}
}

func (w *ackPipeline) Consumer() <-chan raft.AppendFuture { return w.out }

func (w *ackPipeline) Close() error {
	w.close.Do(func() { close(w.done) })
	return w.AppendPipeline.Close()
}
