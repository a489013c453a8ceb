package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgechat/edgechat/internal/backoff"
)

// A node that starts without its Raft state does not vote until it holds
// everything the cluster committed.
//
// Raft's safety rests on every voter remembering what it acknowledged:
// a committed entry is on a majority, and each of them refuses its vote
// to a candidate whose log lacks it. A member whose data directory was
// lost (a replaced volume, a pod rescheduled onto an empty disk) comes
// back under the same name and address with an empty log, and
// hashicorp/raft grants any candidate its vote then. With the one other
// node that held an acknowledged message down and a third that had
// fallen behind, the empty node and the laggard elect the laggard, whose
// first entries overwrite the message on the others when they return:
// an acknowledged message lost. A brand-new joiner is the same case.
//
// So such a node answers vote and pre-vote requests "not granted"
// itself, without handing them to Raft (whose state, the term included,
// stays untouched), until it has applied what a leader had committed
// after it started (a read barrier, readbarrier.go), until it wins an
// election itself (the voters judged its log complete), or until it
// bootstraps a new cluster with BootstrapExpect (nothing was acknowledged
// yet). A file in the Raft directory keeps the guard across a restart
// in the middle of the catch-up, when the log is no longer empty but
// still short.
//
// One request it does hand to Raft: a candidate whose log is at least
// as up to date as that of every other voter of its configuration, each
// asked at once (a census). A committed entry is on a majority, so on
// some voter other than this one, and a log at least as up to date as
// that voter's holds it (Raft's election restriction). Without that, a
// guarded node that is needed for every majority (two voters, or a
// restart of several nodes) and whose own log is not the longest would
// keep its cluster from electing anyone, for good. A voter that does not
// answer fails the census: while the one holder of an acknowledged entry
// is down, the guarded node still elects no one.
type voteGuard struct {
	on     atomic.Bool
	marker string // the file that keeps the guard across restarts
	log    *slog.Logger
	header raft.RPCHeader // this node's, in the answers it makes itself
	out    chan raft.RPC  // what Raft consumes (every RPC but refused votes)
	quit   chan struct{}
	once   sync.Once
	// refused counts the vote and pre-vote requests answered "not
	// granted" by the guard (edgechat_raft_votes_refused_total).
	refused  prometheus.Counter
	toldOnce atomic.Bool // the first refusal was logged
	// census tells whether a candidate with this last log entry holds
	// every committed entry (Raft.candidateHoldsAll); nil: none does.
	census   func(lastTerm, lastIndex uint64) bool
	counting atomic.Bool // a census is under way (one at a time)
}

// voteGuardFile is the marker's name in the Raft directory.
const voteGuardFile = "vote-guard"

// openVoteGuard returns the guard of the node whose Raft directory is
// dir: on if fresh (the node starts without Raft state and does not
// bootstrap a cluster of its own) or if a guard was left on by an earlier
// run; nil when off. A fresh guard's file is written (and synced) before
// Raft starts.
func openVoteGuard(dir string, fresh bool, log *slog.Logger, refused prometheus.Counter) (*voteGuard, error) {
	marker := filepath.Join(dir, voteGuardFile)
	_, err := os.Stat(marker)
	switch {
	case err == nil:
		log.Warn("this node has not caught up with its cluster since it started without its raft state: it votes once it has")
	case !errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("cluster: vote guard: %w", err)
	case !fresh:
		return nil, nil
	default:
		if err := writeSynced(marker); err != nil {
			return nil, fmt.Errorf("cluster: vote guard: %w", err)
		}
	}
	g := &voteGuard{marker: marker, log: log, out: make(chan raft.RPC), quit: make(chan struct{}), refused: refused}
	g.on.Store(true)
	return g, nil
}

// writeSynced creates an empty file and syncs it and its directory.
func writeSynced(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return syncDir(filepath.Dir(path))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// guarded tells whether the guard is on; false for a nil guard.
func (g *voteGuard) guarded() bool { return g != nil && g.on.Load() }

// lift turns the guard off for good: the file goes after the flag, so a
// crash in between only makes the next start catch up once more.
func (g *voteGuard) lift(why string) {
	if g == nil || !g.on.CompareAndSwap(true, false) {
		return
	}
	g.log.Info("this node may vote", "because", why)
	if err := os.Remove(g.marker); err != nil && !errors.Is(err, os.ErrNotExist) {
		g.log.Warn("vote guard: remove its file", "err", err)
		return
	}
	if err := syncDir(filepath.Dir(g.marker)); err != nil {
		g.log.Warn("vote guard: sync the raft directory", "err", err)
	}
}

// relay hands Raft what the transport received, answering vote and
// pre-vote requests itself while the guard is on. It runs until stop.
func (g *voteGuard) relay(in <-chan raft.RPC) {
	for {
		select {
		case rpc := <-in:
			if g.on.Load() {
				if term, index, ok := voteRequest(rpc); ok {
					g.decide(rpc, term, index)
					continue
				}
			}
			g.pass(rpc)
		case <-g.quit:
			return
		}
	}
}

// pass hands rpc to Raft.
func (g *voteGuard) pass(rpc raft.RPC) {
	select {
	case g.out <- rpc:
	case <-g.quit:
	}
}

// voteRequest returns the candidate's last log entry if rpc asks for a
// vote or a pre-vote.
func voteRequest(rpc raft.RPC) (lastTerm, lastIndex uint64, ok bool) {
	switch req := rpc.Command.(type) {
	case *raft.RequestVoteRequest:
		return req.LastLogTerm, req.LastLogIndex, true
	case *raft.RequestPreVoteRequest:
		return req.LastLogTerm, req.LastLogIndex, true
	}
	return 0, 0, false
}

// decide hands a vote request to Raft if the census finds that the
// candidate holds every committed entry, and refuses it otherwise; the
// census runs on its own goroutine (it asks the other voters), one at a
// time: a request that comes meanwhile is refused.
func (g *voteGuard) decide(rpc raft.RPC, lastTerm, lastIndex uint64) {
	if g.census == nil || !g.counting.CompareAndSwap(false, true) {
		g.refuse(rpc)
		return
	}
	go func() {
		defer g.counting.Store(false)
		if g.census(lastTerm, lastIndex) {
			g.pass(rpc)
			return
		}
		g.refuse(rpc)
	}()
}

// refuse answers rpc, a vote or pre-vote request, "not granted". The
// answer carries the candidate's own term: a candidate steps down only
// for a higher one, and this node's real term is Raft's, left as it was.
func (g *voteGuard) refuse(rpc raft.RPC) {
	switch req := rpc.Command.(type) {
	case *raft.RequestVoteRequest:
		rpc.Respond(&raft.RequestVoteResponse{RPCHeader: g.header, Term: req.Term}, nil)
	case *raft.RequestPreVoteRequest:
		rpc.Respond(&raft.RequestPreVoteResponse{RPCHeader: g.header, Term: req.Term}, nil)
	default:
		return
	}
	if g.refused != nil {
		g.refused.Inc()
	}
	if g.toldOnce.CompareAndSwap(false, true) {
		g.log.Info("refused a vote: this node has not caught up with its cluster since it started without its raft state")
	}
}

// stop ends the relay; safe to call more than once and on nil.
func (g *voteGuard) stop() {
	if g != nil {
		g.once.Do(func() { close(g.quit) })
	}
}

// Consumer is the stream of RPCs Raft handles: the transport's, through
// the vote guard when the node started without its state.
func (t *ackTransport) Consumer() <-chan raft.RPC {
	if t.guard != nil {
		return t.guard.out
	}
	return t.NetworkTransport.Consumer()
}

// liftVoteGuard runs in Run while the guard is on: it asks the leader for
// a read index and lifts the guard once this node has applied that far,
// or as soon as this node leads.
func (n *Raft) liftVoteGuard(ctx context.Context) {
	bo := backoff.New(50*time.Millisecond, time.Second)
	for n.votes.guarded() {
		if n.raft.State() == raft.Leader {
			n.votes.lift("elected")
			return
		}
		if addr, _ := n.raft.LeaderWithID(); addr != "" && len(n.configuration()) > 0 {
			idx, err := n.readIndex(ctx)
			if err == nil {
				err = n.waitAppliedIndex(ctx, idx)
			}
			if err == nil {
				n.votes.lift("caught up with the leader")
				return
			}
			n.log.Debug("vote guard: not caught up yet", "err", err)
		}
		if bo.Sleep(ctx) != nil {
			return
		}
	}
}

// candidateHoldsAll is the vote guard's census: every other voter of
// this node's configuration answers at once, and a candidate whose last
// entry (lastTerm, lastIndex) is at least as up to date as each of
// theirs holds every committed entry. No configuration, a voter that does
// not answer (or answers for another name) or one of a version that does
// not say its last entry's term: no.
func (n *Raft) candidateHoldsAll(lastTerm, lastIndex uint64) bool {
	self := raft.ServerID(n.cfg.NodeName)
	others := 0
	for _, s := range n.configuration() {
		if s.ID == self || s.Suffrage != raft.Voter {
			continue
		}
		others++
		ctx, cancel := context.WithTimeout(n.stopCtx, censusTimeout)
		var r InfoReply
		err := n.Call(ctx, string(s.Address), clusterService+".Info", &InfoArgs{Name: n.cfg.NodeName, Addr: n.Addr()}, &r)
		cancel()
		switch {
		case err != nil, r.Name != string(s.ID), r.LastIndex > 0 && r.LastLogTerm == 0:
			return false
		case lastTerm < r.LastLogTerm, lastTerm == r.LastLogTerm && lastIndex < r.LastIndex:
			return false
		}
	}
	return others > 0
}

// censusTimeout bounds each voter's answer to the census: an election
// round does not wait longer.
const censusTimeout = 500 * time.Millisecond
