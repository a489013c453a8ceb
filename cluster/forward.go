package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/internal/wire"
)

// Proposals made on a follower are packed into batches here, exactly as
// the leader's batcher does, and each batch goes by RPC to the leader,
// which appends it and answers the log index. The follower then takes the
// results from its own FSM when it applies that index (handlers are
// deterministic, so every node computes the same results), which keeps
// Go values such as stored envelopes without serialising them.

const (
	// maxForwardsInFlight bounds the batches a follower has at the leader
	// at once; while they are out the next batch gathers in the queue.
	maxForwardsInFlight = 8
	// forwardTimeout bounds a forwarded batch from send to local apply.
	forwardTimeout = applyTimeout + 5*time.Second
	// maxForwardBytes is the largest batch a leader accepts from a
	// follower: the follower's batch cap plus one command that overflows it.
	maxForwardBytes = maxEntryBytes + MaxCommandSize + 64<<10
)

// forward handles a proposal made on a node that is not the leader: it
// joins the next batch sent to the leader.
func (n *Raft) forward(ctx context.Context, t byte, payload []byte) (any, error) {
	r, err := n.enqueue(ctx, n.fwd, t, payload)
	if err != nil {
		return nil, err
	}
	res := n.await(ctx, r)
	return res.value, res.err
}

// forwarder gathers follower proposals into batches and sends each on its
// own goroutine (tracked by wg), at most maxForwardsInFlight at a time.
func (n *Raft) forwarder(ctx context.Context, wg *sync.WaitGroup) {
	sem := make(chan struct{}, maxForwardsInFlight)
	var carry *request
	for {
		batch, ok := n.nextBatch(ctx, n.fwd, &carry, nil)
		if !ok {
			return
		}
		if len(batch) == 0 {
			continue
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			for _, r := range batch {
				r.done <- result{err: ErrStopped}
			}
			if carry != nil {
				carry.done <- result{err: ErrStopped}
			}
			return
		}
		seq := n.fwdSeq.next() // in the order the proposals were made
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			n.sendForward(batch, seq)
		}()
	}
}

// gather takes first and whatever else is queued on q, up to MaxBatch
// commands and maxEntryBytes; a request that does not fit is returned as
// carry for the next batch (the first always fits: a forwarded group is
// never split). Requests whose caller has gone are answered and left out.
func (n *Raft) gather(first *request, q chan *request) (batch []*request, carry *request) {
	size, count := 0, 0
	add := func(r *request) {
		if err := r.ctx.Err(); err != nil {
			r.done <- result{err: fmt.Errorf("%w: %w", wire.ErrUnavailable, err)}
			return
		}
		c, sz := r.commands()
		if len(batch) > 0 && (size+sz > maxEntryBytes || count+c > n.cfg.MaxBatch) {
			carry = r
			return
		}
		batch = append(batch, r)
		size += sz
		count += c
	}
	add(first)
	for count < n.cfg.MaxBatch && carry == nil {
		select {
		case r := <-q:
			add(r)
		default:
			return batch, carry
		}
	}
	return batch, carry
}

// sendForward sends one batch to the leader and answers its requests
// from the local FSM's apply of the entry.
func (n *Raft) sendForward(batch []*request, seq uint64) {
	defer n.fwdSeq.done(seq)
	cmds := make([]fsm.Command, len(batch))
	for i, r := range batch {
		cmds[i] = r.cmd
	}
	data := fsm.EncodeBatch(cmds)
	// Keep results from before the leader answers: this node may apply
	// the entry before the RPC reply arrives.
	release := n.fsm.RetainResults()
	defer release()
	ctx, cancel := context.WithTimeout(context.Background(), forwardTimeout)
	defer cancel()
	stop := context.AfterFunc(n.stopCtx, cancel)
	defer stop()

	fail := func(err error) {
		for _, r := range batch {
			r.done <- result{err: err}
		}
	}
	at, err := n.applyOnLeader(ctx, data, seq)
	if err != nil {
		fail(err)
		return
	}
	if !at.Merged {
		// The entry is this batch alone (an older leader); a merged
		// entry is counted by the leader's batcher.
		n.m.batch.Observe(float64(len(batch)))
	}
	idx := at.Index
	results, err := n.fsm.WaitApplied(ctx, idx)
	if err != nil {
		fail(fmt.Errorf("%w: entry %d committed but its results are not known here: %w", wire.ErrUnavailable, idx, err))
		return
	}
	if at.Offset < 0 || at.Offset+len(batch) > len(results) || (!at.Merged && len(results) != len(batch)) {
		fail(fmt.Errorf("%w: entry %d answered %d results for %d commands at %d", wire.ErrUnavailable, idx, len(results), len(batch), at.Offset))
		return
	}
	results = results[at.Offset:]
	for i, r := range batch {
		r.done <- result{value: results[i].Value, err: results[i].Err}
	}
}

// applyOnLeader hands an encoded batch to the leader and returns where it
// landed (the log index, and the offset in the entry when the leader
// merged it with other commands). A "not the leader" answer (nothing was
// appended) is retried once after the leader is resolved again, and so is
// a failure to connect.
func (n *Raft) applyOnLeader(ctx context.Context, data []byte, seq uint64) (ApplyReply, error) {
	var tried string
	for attempt := 0; ; attempt++ {
		addr, err := n.waitLeader(ctx, tried)
		if err != nil {
			return ApplyReply{}, err
		}
		var reply ApplyReply
		err = n.Call(ctx, addr, clusterService+".Apply", &ApplyArgs{Data: data, Timeout: applyTimeout, Merge: true,
			From: n.cfg.NodeName, Epoch: n.fwdSeq.epoch, Seq: seq, Low: n.fwdSeq.low()}, &reply)
		if err != nil {
			if errors.Is(err, errNotSent) && attempt == 0 {
				tried = addr
				continue
			}
			return ApplyReply{}, fmt.Errorf("%w: forwarding to the leader at %s (the command may still commit): %w", wire.ErrUnavailable, addr, err)
		}
		switch reply.Code {
		case "":
			return reply, nil
		case codeNotLeader:
			if attempt == 0 {
				tried = addr
				continue
			}
			return ApplyReply{}, fmt.Errorf("%w (%s: %s)", ErrNotLeader, addr, reply.Message)
		case codeInvalid:
			return ApplyReply{}, fmt.Errorf("%w: leader refused the batch: %s", wire.ErrInvalid, reply.Message)
		case codeMaybe:
			return ApplyReply{}, fmt.Errorf("%w: %s (the command may still commit)", wire.ErrUnavailable, reply.Message)
		default:
			return ApplyReply{}, fmt.Errorf("%w: %s", wire.ErrUnavailable, reply.Message)
		}
	}
}

// leaderWait is how long a proposal waits for a leader to appear, about
// the time Raft needs to notice a dead leader and elect another.
func (n *Raft) leaderWait() time.Duration {
	return 2 * (n.cfg.HeartbeatTimeout + n.cfg.ElectionTimeout)
}

// waitLeader returns the leader's address, waiting up to leaderWait (and
// ctx) for one to be known. An address equal to avoid (a leader that just
// refused or could not be reached) is taken only once the wait is over.
func (n *Raft) waitLeader(ctx context.Context, avoid string) (string, error) {
	deadline := time.Now().Add(n.leaderWait())
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		addr, _ := n.raft.LeaderWithID()
		over := time.Now().After(deadline)
		if addr != "" && (string(addr) != avoid || over) {
			return string(addr), nil
		}
		if over {
			return "", ErrNoLeader
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("%w: %w", ErrNoLeader, ctx.Err())
		case <-n.stopping:
			return "", ErrStopped
		case <-tick.C:
		}
	}
}

// applyForwarded is the leader's side of a forwarded batch.
func (n *Raft) applyForwarded(args *ApplyArgs, reply *ApplyReply) {
	select {
	case <-n.stopping:
		reply.Code, reply.Message = codeUnavailable, "node stopping"
		return
	default:
	}
	if n.raft.State() != raft.Leader {
		reply.Code, reply.Message = codeNotLeader, "not the leader"
		return
	}
	// Its turn after the follower's batch before it; whatever happens
	// next, the one after it goes once this one is handed over.
	handed := n.fwdOrder.wait(args.From, args.Epoch, args.Seq, args.Low)
	defer handed()
	if len(args.Data) > maxForwardBytes {
		reply.Code, reply.Message = codeInvalid, fmt.Sprintf("batch of %d bytes", len(args.Data))
		return
	}
	cmds, err := fsm.DecodeBatch(args.Data)
	if err == nil && len(cmds) == 0 {
		err = errors.New("empty batch")
	}
	for _, c := range cmds {
		if len(c.Payload) > MaxCommandSize {
			err = ErrTooLarge
		}
	}
	if err != nil {
		reply.Code, reply.Message = codeInvalid, err.Error()
		return
	}
	timeout := args.Timeout
	if timeout <= 0 || timeout > applyTimeout {
		timeout = applyTimeout
	}
	if args.Merge {
		n.applyMerged(cmds, timeout, reply, handed)
		return
	}
	f := n.raft.Apply(args.Data, timeout)
	if err := n.awaitFuture(context.Background(), f); err != nil {
		reply.Message = err.Error()
		switch {
		case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipTransferInProgress):
			reply.Code = codeNotLeader // never appended
		case errors.Is(err, raft.ErrEnqueueTimeout):
			reply.Code = codeUnavailable
		default:
			reply.Code = codeMaybe // appended, fate unknown
		}
		return
	}
	reply.Index = f.Index()
	// The follower that forwarded this waits for its own FSM to apply the
	// entry: tell it the commit index now.
	n.announceCommit(true)
}

// applyMerged appends a forwarded batch through the leader's batcher, so
// that it shares an entry with the leader's own proposals and with other
// followers' batches waiting at the same moment: at moderate rates nearly
// every forwarded batch was one command in an entry of its own, and each
// entry costs every node a Raft log record, an FSM apply with its own
// Badger transaction, and a share of a log write and fsync. The batch is
// never split, so its commands stay consecutive in the entry and the
// follower finds its results from Offset on.
func (n *Raft) applyMerged(cmds []fsm.Command, timeout time.Duration, reply *ApplyReply, handed func()) {
	// The request expires, unappended, if the batcher has not packed it
	// within timeout (Raft's own enqueue timeout on the direct path).
	ctx, cancel := context.WithTimeout(n.stopCtx, timeout)
	defer cancel()
	r := &request{ctx: ctx, group: cmds, done: make(chan result, 1)}
	select {
	case n.reqs <- r:
		handed() // the follower's next batch may follow it into the queue
	case <-ctx.Done():
		reply.Code, reply.Message = codeUnavailable, "leader busy: "+ctx.Err().Error()
		return
	}
	// Wait without a deadline: once packed, only the waiter's answer
	// tells whether the entry was appended (it always answers, or the
	// node stops).
	res := n.await(context.Background(), r)
	if res.err != nil {
		reply.Message = res.err.Error()
		switch {
		case errors.Is(res.err, raft.ErrNotLeader), errors.Is(res.err, raft.ErrLeadershipTransferInProgress):
			reply.Code = codeNotLeader // never appended
		case errors.Is(res.err, raft.ErrEnqueueTimeout), errors.Is(res.err, context.DeadlineExceeded), errors.Is(res.err, context.Canceled):
			// Raft refused it, or it expired before the batcher packed it
			// (the waiter never reports a context error).
			reply.Code = codeUnavailable
		default:
			reply.Code = codeMaybe // appended, fate unknown
		}
		return
	}
	pos, ok := res.value.(groupPos)
	if !ok {
		reply.Code, reply.Message = codeMaybe, fmt.Sprintf("forwarded batch answered %T", res.value)
		return
	}
	reply.Index, reply.Offset, reply.Merged = pos.index, pos.offset, true
	// The follower that forwarded this waits for its own FSM to apply the
	// entry: tell it the commit index now.
	n.announceCommit(true)
}
