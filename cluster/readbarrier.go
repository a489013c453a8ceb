package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/edgechat/edgechat/internal/peerrpc"
	"github.com/edgechat/edgechat/internal/wire"
)

// A read barrier makes a read on any node see every write acknowledged
// anywhere before the read began. A follower applies what the leader
// committed a moment after the leader (and after the node that proposed
// it, which acknowledged it already), so without one a client that
// subscribed and then synced on a follower could miss a message whose
// live delivery went out just before its subscription (docs/protocol.md,
// "subscribe first, then sync").
//
// Every node delivers the chat messages its own FSM applies (live
// delivery from the apply), and a follower may apply an entry before the
// leader's FSM does: what a read must see is everything committed before
// it began, not what the leader applied. The leader makes sure it still
// leads (readBarrierRound: a Raft barrier in the first round of its
// term, a round of heartbeats after that) and answers the last command
// at or below its commit index as the round began; the node waits until
// its FSM has applied that far. Requests share rounds (readRounds): one
// that arrives while a round is out waits for the next, which starts
// when that one ends, so a reconnection storm costs a round per round
// trip, not one per client.

// readIndexMethod is the leader's side, "Cluster.ReadIndex".
const readIndexMethod = "ReadIndex"

type (
	ReadIndexArgs  struct{}
	ReadIndexReply struct {
		Index         uint64
		Code, Message string
	}
)

// ReadBarrier returns once this node has applied every entry committed
// before the call. It fails (wire.ErrUnavailable) when no leader answers
// before ctx ends or within the leader wait.
func (n *Raft) ReadBarrier(ctx context.Context) error {
	if n.soleServer() {
		// What a single node acknowledged it had applied first, and what
		// it has not applied yet it delivers live once it has.
		return nil
	}
	idx, err := n.readIndex(ctx)
	if err != nil {
		return err
	}
	return n.waitAppliedIndex(ctx, idx)
}

// readIndex is the index of the last command the leader's FSM applied
// after a barrier started after the call: local on the leader, asked for
// over RPC on a follower.
func (n *Raft) readIndex(ctx context.Context) (uint64, error) {
	var tried string
	for attempt := 0; ; attempt++ {
		addr, err := n.waitLeader(ctx, tried)
		if err != nil {
			return 0, fmt.Errorf("%w: read barrier: %w", wire.ErrUnavailable, err)
		}
		if addr == n.Addr() {
			// This node leads: its own barrier.
			var r ReadIndexReply
			n.leaderReadIndex(ctx, &r)
			if r.Code == "" {
				return r.Index, nil
			}
			if attempt == 0 {
				tried = addr
				continue
			}
			return 0, fmt.Errorf("%w: read barrier: %s", wire.ErrUnavailable, r.Message)
		}
		var r ReadIndexReply
		err = n.Call(ctx, addr, clusterService+"."+readIndexMethod, &ReadIndexArgs{}, &r)
		switch {
		case peerrpc.IsUnknownMethod(err):
			// A leader of an older version (a rolling upgrade) has no
			// ReadIndex: read what this node has, as before. Any other
			// refusal is a failure like a lost connection.
			n.log.Debug("read barrier: leader cannot answer; reading without", "leader", addr, "err", err)
			return 0, nil
		case err != nil:
			if attempt == 0 {
				tried = addr
				continue
			}
			return 0, fmt.Errorf("%w: read barrier at %s: %w", wire.ErrUnavailable, addr, err)
		case r.Code == codeNotLeader && attempt == 0:
			tried = addr
			continue
		case r.Code != "":
			return 0, fmt.Errorf("%w: read barrier at %s: %s", wire.ErrUnavailable, addr, r.Message)
		}
		return r.Index, nil
	}
}

// readRounds shares the leader's read barriers. A request joins the
// round that has not started yet (next); a round starts when none is
// out, so every request's barrier was appended after the request came.
type readRounds struct {
	mu      sync.Mutex
	running bool
	next    *readRound
	// establishedTerm is the term in which one of this node's barriers
	// passed while it led (touched by runReadRounds only): see
	// readBarrierRound.
	establishedTerm uint64
}

type readRound struct {
	done  chan struct{}
	reply ReadIndexReply
}

// leaderReadIndex answers the index of the last command the FSM applied
// after a barrier that started after the call.
func (n *Raft) leaderReadIndex(ctx context.Context, r *ReadIndexReply) {
	if n.raft.State() != raft.Leader {
		r.Code, r.Message = codeNotLeader, "not the leader"
		return
	}
	rr := &n.reads
	rr.mu.Lock()
	round := rr.next
	if round == nil {
		round = &readRound{done: make(chan struct{})}
		rr.next = round
	}
	if !rr.running {
		rr.running = true
		// A helper, so that Run waits for it (none starts once Run is
		// returning: the round fails as unavailable, for every request
		// in it).
		if !n.helpers.start(n.runReadRounds) {
			rr.running = false
			rr.next = nil
			round.reply = ReadIndexReply{Code: codeUnavailable, Message: "node stopping"}
			close(round.done) // this request's and those that joined it
		}
	}
	rr.mu.Unlock()
	select {
	case <-round.done:
		*r = round.reply
	case <-ctx.Done():
		r.Code, r.Message = codeUnavailable, ctx.Err().Error()
	}
}

// runReadRounds runs the waiting round, and the one that gathered
// meanwhile, until none is waiting.
func (n *Raft) runReadRounds() {
	rr := &n.reads
	for {
		rr.mu.Lock()
		round := rr.next
		rr.next = nil
		if round == nil {
			rr.running = false
			rr.mu.Unlock()
			return
		}
		rr.mu.Unlock()
		round.reply = n.readBarrierRound()
		close(round.done)
	}
}

// readBarrierRound answers the index a read must wait for: the last
// command entry committed when the round began, once this node is known
// to lead.
//
// The first round of a term appends a barrier and waits for it: the
// barrier commits only after every entry before it, the previous
// leader's included, which a new leader may not have committed in its
// own term yet. Later rounds of the same term need no log entry: the
// commit index as the round begins covers every entry any node has
// applied (followers learn theirs from this leader), provided this node
// still leads, which VerifyLeader confirms with one round of heartbeats
// (no entry, no fsync). A deposed leader fails it and answers nothing
// stale. The commit index, not this FSM's last command: a follower may
// have applied, and delivered live, an entry this leader's FSM has not
// reached yet, and a client that subscribed there and then reads must
// find it.
func (n *Raft) readBarrierRound() ReadIndexReply {
	ctx, cancel := context.WithTimeout(n.stopCtx, applyTimeout)
	defer cancel()
	term := n.raft.CurrentTerm()
	if term != 0 && n.reads.establishedTerm == term {
		committed := n.raft.CommitIndex()
		if err := n.awaitFuture(ctx, n.raft.VerifyLeader()); err != nil {
			return readRoundFailed(err)
		}
		n.m.readLeaderChecks.Inc()
		return ReadIndexReply{Index: n.lastCommandUpTo(committed)}
	}
	if err := n.awaitFuture(ctx, n.raft.Barrier(applyTimeout)); err != nil {
		return readRoundFailed(err)
	}
	// A barrier that passed in a later term than the one read before
	// it leaves the term unrecorded: the next round appends another.
	n.reads.establishedTerm = term
	n.m.readBarriers.Inc()
	// Followers learn the commit index with the next append; a follower
	// waiting for this one is told now.
	n.announceCommit(true)
	// The FSM has applied every command before the barrier now (Raft
	// answers the barrier from the FSM's goroutine); its last index is
	// the one to wait for (the barrier's own index, or an election's
	// no-op, never reaches the FSM).
	return ReadIndexReply{Index: n.fsm.LastApplied()}
}

// lastCommandUpTo is the index of the last command entry at or below
// index: the last one an FSM that has applied everything up to index has
// applied (the FSM counts commands only; barriers, no-ops and
// configuration entries never reach it as such). It looks no lower than
// what this node's FSM has applied already, which every reader waits
// for at most.
func (n *Raft) lastCommandUpTo(index uint64) uint64 {
	applied := n.fsm.LastApplied()
	var l raft.Log
	for i := index; i > applied; i-- {
		if err := n.logs.GetLog(i, &l); err != nil {
			// Above the FSM's last command the log holds every entry (a
			// snapshot covers only what the FSM applied): not expected.
			n.log.Warn("read barrier: reading the log", "index", i, "err", err)
			return applied
		}
		if l.Type == raft.LogCommand {
			return i
		}
	}
	return applied
}

// readRoundFailed is the answer of a round whose barrier or leadership
// check failed.
func readRoundFailed(err error) ReadIndexReply {
	code := codeUnavailable
	if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
		code = codeNotLeader
	}
	return ReadIndexReply{Code: code, Message: err.Error()}
}

// waitAppliedIndex waits until this node's FSM has applied the command
// entry at index.
func (n *Raft) waitAppliedIndex(ctx context.Context, index uint64) error {
	if n.fsm.LastApplied() >= index {
		return nil
	}
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for n.fsm.LastApplied() < index {
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: read barrier: applying up to %d: %w", wire.ErrUnavailable, index, ctx.Err())
		case <-n.stopping:
			return ErrStopped
		case <-tick.C:
		}
	}
	return nil
}
