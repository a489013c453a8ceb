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
		batch, ok := n.nextBatch(ctx, n.fwd, &carry)
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
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			n.sendForward(batch)
		}()
	}
}

// gather takes first and whatever else is queued on q, up to MaxBatch
// commands and maxEntryBytes; a request that does not fit is returned as
// carry for the next batch. Requests whose caller has gone are answered
// and left out.
func (n *Raft) gather(first *request, q chan *request) (batch []*request, carry *request) {
	size := 0
	add := func(r *request) {
		if err := r.ctx.Err(); err != nil {
			r.done <- result{err: fmt.Errorf("%w: %w", wire.ErrUnavailable, err)}
			return
		}
		if len(batch) > 0 && size+len(r.cmd.Payload) > maxEntryBytes {
			carry = r
			return
		}
		batch = append(batch, r)
		size += len(r.cmd.Payload)
	}
	add(first)
	for len(batch) < n.cfg.MaxBatch && carry == nil {
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
func (n *Raft) sendForward(batch []*request) {
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
	idx, err := n.applyOnLeader(ctx, data)
	if err != nil {
		fail(err)
		return
	}
	n.m.batch.Observe(float64(len(batch)))
	results, err := n.fsm.WaitApplied(ctx, idx)
	if err != nil {
		fail(fmt.Errorf("%w: entry %d committed but its results are not known here: %w", wire.ErrUnavailable, idx, err))
		return
	}
	if len(results) != len(batch) {
		fail(fmt.Errorf("%w: entry %d answered %d results for %d commands", wire.ErrUnavailable, idx, len(results), len(batch)))
		return
	}
	for i, r := range batch {
		r.done <- result{value: results[i].Value, err: results[i].Err}
	}
}

// applyOnLeader hands an encoded batch to the leader and returns its log
// index. A "not the leader" answer (nothing was appended) is retried once
// after the leader is resolved again, and so is a failure to connect.
func (n *Raft) applyOnLeader(ctx context.Context, data []byte) (uint64, error) {
	var tried string
	for attempt := 0; ; attempt++ {
		addr, err := n.waitLeader(ctx, tried)
		if err != nil {
			return 0, err
		}
		var reply ApplyReply
		err = n.Call(ctx, addr, clusterService+".Apply", &ApplyArgs{Data: data, Timeout: applyTimeout}, &reply)
		if err != nil {
			if errors.Is(err, errNotSent) && attempt == 0 {
				tried = addr
				continue
			}
			return 0, fmt.Errorf("%w: forwarding to the leader at %s (the command may still commit): %w", wire.ErrUnavailable, addr, err)
		}
		switch reply.Code {
		case "":
			return reply.Index, nil
		case codeNotLeader:
			if attempt == 0 {
				tried = addr
				continue
			}
			return 0, fmt.Errorf("%w (%s: %s)", ErrNotLeader, addr, reply.Message)
		case codeInvalid:
			return 0, fmt.Errorf("%w: leader refused the batch: %s", wire.ErrInvalid, reply.Message)
		case codeMaybe:
			return 0, fmt.Errorf("%w: %s (the command may still commit)", wire.ErrUnavailable, reply.Message)
		default:
			return 0, fmt.Errorf("%w: %s", wire.ErrUnavailable, reply.Message)
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
