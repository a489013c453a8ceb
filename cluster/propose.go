package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/internal/waitnotice"
	"github.com/edgechat/edgechat/internal/wire"
)

// request is one proposed command waiting for its result, or on the
// leader a follower's forwarded batch (group) that must stay together in
// one entry.
type request struct {
	ctx context.Context
	cmd fsm.Command
	// group, when not nil, is a forwarded batch packed as a whole in
	// place of cmd; its result's value is a groupPos.
	group []fsm.Command
	done  chan result // buffered: the waiter never blocks on a caller that left
}

// groupPos is where a forwarded batch landed: the entry's index and the
// position of its first command in the entry. The follower takes its
// results from its own apply of that entry, from offset on.
type groupPos struct {
	index  uint64
	offset int
}

// commands reports how many commands r adds to an entry and their
// payload bytes.
func (r *request) commands() (count, size int) {
	if r.group == nil {
		return 1, len(r.cmd.Payload)
	}
	for _, c := range r.group {
		size += len(c.Payload)
	}
	return len(r.group), size
}

type result struct {
	value any
	err   error
}

// inflight is an entry handed to Raft and the requests packed into it.
type inflight struct {
	f    raft.ApplyFuture
	reqs []*request
}

// Propose appends one command to the Raft log, packed with whatever other
// proposals are waiting, and returns the value or error that the
// command's FSM handler returned. On a follower the batch is forwarded to
// the leader and the result is taken from this node's own apply of the
// entry (forward.go). Failures to commit wrap wire.ErrUnavailable: no
// leader (after waiting about an election for one), no quorum, shutdown,
// Raft overloaded, or ctx done first. When ctx ends first the command may
// still commit, so callers must make commands safe to repeat.
func (n *Raft) Propose(ctx context.Context, t byte, payload []byte) (any, error) {
	start := time.Now()
	v, err := n.propose(ctx, t, payload)
	n.m.observe(start, err)
	return v, err
}

func (n *Raft) propose(ctx context.Context, t byte, payload []byte) (any, error) {
	if len(payload) > MaxCommandSize {
		return nil, fmt.Errorf("%w: %d bytes, at most %d", ErrTooLarge, len(payload), MaxCommandSize)
	}
	select {
	case <-n.stopping:
		return nil, ErrStopped
	default:
	}
	if n.raft.State() != raft.Leader {
		return n.forward(ctx, t, payload)
	}
	r, err := n.enqueue(ctx, n.reqs, t, payload)
	if err != nil {
		return nil, err
	}
	res := n.await(ctx, r)
	if errors.Is(res.err, raft.ErrNotLeader) {
		// Leadership moved before the entry was appended: it was never in
		// the log, so handing it on is safe.
		return n.forward(ctx, t, payload)
	}
	return res.value, res.err
}

// ProposeAsync hands a command to the Raft log now, in the order of
// the calls (on the leader, a connection's commands commit in the order
// it made them), and returns a function that waits for its result: the
// value or error of the command's FSM handler, exactly as Propose
// returns them. ctx bounds the enqueueing and is the request's context
// (a request whose ctx has ended before it joins a batch is dropped);
// the wait has its own context. The wait function must be called once.
// On a follower the command is queued for the leader the same way;
// follower batches travel concurrently and the leader hands them to its
// batcher in the order they were made (forwardorder.go), so the calls'
// order holds there too unless a batch is lost on its way (a broken
// connection, a leader change).
func (n *Raft) ProposeAsync(ctx context.Context, t byte, payload []byte) func(context.Context) (any, error) {
	start := time.Now()
	fail := func(err error) func(context.Context) (any, error) {
		n.m.observe(start, err)
		return func(context.Context) (any, error) { return nil, err }
	}
	if len(payload) > MaxCommandSize {
		return fail(fmt.Errorf("%w: %d bytes, at most %d", ErrTooLarge, len(payload), MaxCommandSize))
	}
	select {
	case <-n.stopping:
		return fail(ErrStopped)
	default:
	}
	leader := n.raft.State() == raft.Leader
	q := n.reqs
	if !leader {
		q = n.fwd
	}
	// The request outlives ctx: the caller waits with another context.
	r, err := n.enqueueFor(ctx, context.WithoutCancel(ctx), q, t, payload)
	if err != nil {
		return fail(err)
	}
	return func(wctx context.Context) (any, error) {
		res := n.await(wctx, r)
		if leader && errors.Is(res.err, raft.ErrNotLeader) {
			// As in propose: never appended, so handing it on is safe.
			res.value, res.err = n.forward(wctx, t, payload)
		}
		n.m.observe(start, res.err)
		return res.value, res.err
	}
}

// await waits for a queued request's result; when ctx ends first the
// command may still commit, and when the node stopped the result is
// taken if it came, else ErrStopped.
func (n *Raft) await(ctx context.Context, r *request) result {
	select {
	case res := <-r.done:
		return res
	default:
		waitnotice.Blocking(ctx)
	}
	select {
	case res := <-r.done:
		return res
	case <-ctx.Done():
		return result{err: fmt.Errorf("%w: %w (the command may still commit)", wire.ErrUnavailable, ctx.Err())}
	case <-n.stopped:
		select {
		case res := <-r.done:
			return res
		default:
			return result{err: ErrStopped}
		}
	}
}

// batcher packs waiting requests into entries: it takes the first one,
// waits until fewer than MaxEntriesInFlight entries are in Raft, then
// takes whatever else is queued (up to MaxBatch), with no timer. While
// Raft commits one entry, the next batch gathers in the queue, so
// batches grow with load by themselves.
func (n *Raft) batcher(ctx context.Context) {
	var carry *request
	cmds := make([]fsm.Command, 0, n.cfg.MaxBatch)
	for {
		// The slot is taken before gathering: what arrives while the
		// entries in flight commit joins this one.
		batch, ok := n.nextBatch(ctx, n.reqs, &carry, n.slots)
		if !ok {
			return
		}
		if len(batch) == 0 {
			<-n.slots
			continue
		}
		cmds = cmds[:0]
		for _, r := range batch {
			if r.group != nil {
				cmds = append(cmds, r.group...)
			} else {
				cmds = append(cmds, r.cmd)
			}
		}
		f := n.raft.Apply(fsm.EncodeBatch(cmds), applyTimeout)
		n.m.batch.Observe(float64(len(cmds)))
		// The waiter answers this entry (and frees its slot) while the
		// next batch is being built.
		select {
		case n.pending <- &inflight{f: f, reqs: batch}:
		case <-ctx.Done():
			// Shutting down with the waiter behind: these callers are
			// released with ErrStopped when Run returns.
			return
		}
	}
}

// enqueue hands a command to q (the batcher's queue, or the follower's
// queue to the leader). The payload is copied so that a caller who gives
// up on ctx may reuse its buffer while the batch is still being built.
func (n *Raft) enqueue(ctx context.Context, q chan *request, t byte, payload []byte) (*request, error) {
	return n.enqueueFor(ctx, ctx, q, t, payload)
}

// enqueueFor is enqueue with a request context (checked when the batch
// is gathered) apart from the context that bounds the enqueueing.
func (n *Raft) enqueueFor(ctx, reqCtx context.Context, q chan *request, t byte, payload []byte) (*request, error) {
	r := &request{ctx: reqCtx, cmd: fsm.Command{Type: t, Payload: bytes.Clone(payload)}, done: make(chan result, 1)}
	select {
	case q <- r:
		return r, nil
	case <-n.stopping:
		return nil, ErrStopped
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: %w", wire.ErrUnavailable, ctx.Err())
	}
}

// nextBatch takes the request carried over from the last batch, or waits
// for the first one on q; then, when slot is not nil, waits to put a token
// in it; then gathers what else is queued (gather). False when ctx ended
// first (holding no token). The batcher (with its in-flight slots) and
// the follower's forwarder (without) both pack their queues with it.
func (n *Raft) nextBatch(ctx context.Context, q chan *request, carry **request, slot chan struct{}) ([]*request, bool) {
	first := *carry
	*carry = nil
	if first == nil {
		select {
		case <-ctx.Done():
			return nil, false
		case first = <-q:
		}
	}
	if slot != nil {
		select {
		case slot <- struct{}{}:
		case <-ctx.Done():
			return nil, false
		}
	}
	batch, next := n.gather(first, q)
	*carry = next
	return batch, true
}

// waiter answers the requests of each entry once Raft has applied it.
// Entries resolve in log order, so one goroutine suffices.
func (n *Raft) waiter() {
	for in := range n.pending {
		err := in.f.Error()
		<-n.slots // applied (or failed): the batcher may hand Raft the next entry
		var results []fsm.Result
		if err == nil {
			var ok bool
			results, ok = in.f.Response().([]fsm.Result)
			want := 0
			for _, r := range in.reqs {
				c, _ := r.commands()
				want += c
			}
			if !ok || len(results) != want {
				err = fmt.Errorf("%w: entry %d answered %d results for %d commands", wire.ErrUnavailable, in.f.Index(), len(results), want)
			}
		} else {
			err = raftErr(err)
		}
		if err == nil {
			n.announceCommit(false)
		}
		off := 0
		for _, r := range in.reqs {
			switch {
			case err != nil:
				r.done <- result{err: err}
			case r.group != nil:
				r.done <- result{value: groupPos{index: in.f.Index(), offset: off}}
				off += len(r.group)
			default:
				r.done <- result{value: results[off].Value, err: results[off].Err}
				off++
			}
		}
	}
}

// raftErr maps an Apply failure to the errors callers test for.
// raft.ErrNotLeader stays visible (wrapped) so Propose can forward.
func raftErr(err error) error {
	switch {
	case errors.Is(err, raft.ErrNotLeader):
		return fmt.Errorf("%w: %w", ErrNotLeader, err)
	case errors.Is(err, raft.ErrRaftShutdown):
		return fmt.Errorf("%w: %w", ErrStopped, err)
	case errors.Is(err, raft.ErrLeadershipLost):
		return fmt.Errorf("%w: %w (the command may still commit)", wire.ErrUnavailable, err)
	default:
		// ErrEnqueueTimeout, ErrLeadershipTransferInProgress, a failed
		// log write: none of them committed now.
		return fmt.Errorf("%w: %w", wire.ErrUnavailable, err)
	}
}

// failForwards answers the follower proposals still queued when the
// forwarder stopped.
func (n *Raft) failForwards() {
	for {
		select {
		case r := <-n.fwd:
			r.done <- result{err: ErrStopped}
		default:
			return
		}
	}
}

// failQueued answers the requests still queued when the batcher stopped.
func (n *Raft) failQueued() {
	for {
		select {
		case r := <-n.reqs:
			r.done <- result{err: ErrStopped}
		default:
			return
		}
	}
}

// metrics of the proposal path.
type metrics struct {
	// votesRefused counts the votes the vote guard refused (voteguard.go).
	votesRefused prometheus.Counter
	commit       prometheus.Histogram
	batch        prometheus.Histogram
	ok           prometheus.Counter
	rejected     prometheus.Counter
	unavailable  prometheus.Counter
	invalid      prometheus.Counter
	// announcements counts the barriers the leader appended to tell
	// followers the commit index (announce.go).
	announcements prometheus.Counter
	// notices counts commit notices a follower took (notice.go);
	// noticeFallbacks those it refused (it did not hold the entry yet),
	// each followed by a barrier; noticeFailures those the transport
	// could not deliver.
	notices, noticeFallbacks, noticeFailures prometheus.Counter
	// catchUps counts the barriers appended to feed a follower that was
	// behind while the leader was idle (catchup.go).
	catchUps prometheus.Counter
	// readBarriers counts the barriers the leader appended for read
	// barriers (readbarrier.go), shared by the reads that waited on each.
	readBarriers prometheus.Counter
	// readLeaderChecks counts the read rounds answered after a round of
	// heartbeats instead of a barrier (a term's later rounds).
	readLeaderChecks prometheus.Counter
	// compactionsSkipped counts log compactions not passed to raft-wal
	// because they would free no segment (logstore.go).
	compactionsSkipped prometheus.Counter
	// logWriteFailures counts appends to the Raft log that failed (a
	// full or failing disk).
	logWriteFailures prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	commit := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "edgechat_raft_commit_seconds",
		Help:    "Time from Propose to the command's result (commit and apply).",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 17), // 100µs .. 6.5s
	})
	batch := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "edgechat_raft_batch_commands",
		Help:    "Commands packed into one Raft entry.",
		Buckets: prometheus.ExponentialBuckets(1, 2, 11), // 1 .. 1024
	})
	total := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "edgechat_raft_proposals_total",
		Help: "Proposals by result: ok, rejected (the handler returned an error), unavailable (not committed now), invalid.",
	}, []string{"result"})
	announcements := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "edgechat_raft_commit_announcements_total",
		Help: "Barriers the leader appended to tell followers of its commits at once (instead of a short CommitTimeout).",
	})
	notices := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "edgechat_raft_commit_notices_total",
		Help: "Commit notices (an AppendEntries without entries, no log write) the leader sent followers, by result: taken, refused (the follower did not hold the entry yet: a barrier follows), failed (not delivered).",
	}, []string{"result"})
	skipped := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "edgechat_raft_log_compactions_skipped_total",
		Help: "Raft log compactions not passed to raft-wal because they would have deleted no segment file (each would hold the log's write lock across a metadata commit); the next one includes them.",
	})
	catchUps := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "edgechat_raft_catchup_barriers_total",
		Help: "Barriers the leader appended to feed a follower whose log was behind while nothing else was appended.",
	})
	readBarriers := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "edgechat_raft_read_barriers_total",
		Help: "Barriers the leader appended so that reads on any node (/chat/sync) see every earlier commit; concurrent reads share one.",
	})
	readLeaderChecks := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "edgechat_raft_read_leader_checks_total",
		Help: "Read rounds the leader answered after confirming its leadership with a round of heartbeats, without a log entry (every round of a term after its first barrier).",
	})
	votesRefused := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "edgechat_raft_votes_refused_total",
		Help: "Vote and pre-vote requests this node refused because it started without its Raft state (a new member, or a lost data directory) and has not caught up with its cluster yet.",
	})
	logWriteFailures := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "edgechat_raft_log_write_failures_total",
		Help: "Appends to this node's Raft log that failed (a full or failing disk); the node is not ready until an append succeeds again.",
	})
	if reg != nil {
		var err error
		if logWriteFailures, err = register(reg, logWriteFailures); err != nil {
			return nil, err
		}
		if votesRefused, err = register(reg, votesRefused); err != nil {
			return nil, err
		}
		if readBarriers, err = register(reg, readBarriers); err != nil {
			return nil, err
		}
		if readLeaderChecks, err = register(reg, readLeaderChecks); err != nil {
			return nil, err
		}
		if announcements, err = register(reg, announcements); err != nil {
			return nil, err
		}
		if catchUps, err = register(reg, catchUps); err != nil {
			return nil, err
		}
		if skipped, err = register(reg, skipped); err != nil {
			return nil, err
		}
		if notices, err = register(reg, notices); err != nil {
			return nil, err
		}
		if commit, err = register(reg, commit); err != nil {
			return nil, err
		}
		if batch, err = register(reg, batch); err != nil {
			return nil, err
		}
		if total, err = register(reg, total); err != nil {
			return nil, err
		}
	}
	return &metrics{
		commit:             commit,
		batch:              batch,
		announcements:      announcements,
		compactionsSkipped: skipped,
		notices:            notices.WithLabelValues("taken"),
		noticeFallbacks:    notices.WithLabelValues("refused"),
		noticeFailures:     notices.WithLabelValues("failed"),
		catchUps:           catchUps,
		readBarriers:       readBarriers,
		readLeaderChecks:   readLeaderChecks,
		ok:                 total.WithLabelValues("ok"),
		rejected:           total.WithLabelValues("rejected"),
		unavailable:        total.WithLabelValues("unavailable"),
		invalid:            total.WithLabelValues("invalid"),
		logWriteFailures:   logWriteFailures,
		votesRefused:       votesRefused,
	}, nil
}

// register registers c, or returns the collector already registered
// under the same name (a node restarted in the same process).
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing, nil
			}
		}
		return c, fmt.Errorf("cluster: register metrics: %w", err)
	}
	return c, nil
}

func (m *metrics) observe(start time.Time, err error) {
	switch {
	case err == nil:
		m.ok.Inc()
		m.commit.Observe(time.Since(start).Seconds())
	case errors.Is(err, wire.ErrUnavailable):
		m.unavailable.Inc()
	case errors.Is(err, ErrTooLarge):
		m.invalid.Inc()
	default:
		m.rejected.Inc()
		m.commit.Observe(time.Since(start).Seconds())
	}
}
