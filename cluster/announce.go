package cluster

import (
	"context"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// Telling followers the commit index.
//
// A follower learns that an entry committed only from the leader's next
// AppendEntries: the one that carries a later entry, or the one Raft
// sends after CommitTimeout without new entries. A short CommitTimeout
// keeps followers fresh but makes an idle leader send hundreds of empty
// appends a second (5 ms cost an idle three-node cluster about 13% of a
// core). So CommitTimeout is long, and the leader announces commits when
// it has made one: it sends every follower a commit notice, an
// AppendEntries without entries that carries the new commit index
// (notice.go). Until the fourth session it appended a Raft barrier
// instead, whose AppendEntries carried the index; that cost a log write
// and fsync on every node per announcement, and a barrier is still the
// fallback when a notice cannot be sent or a follower refuses it.
//
// An announcement is made only when nothing else will carry the news: an
// entry appended after the commit carries a commit index at least as
// new. For its own proposals the leader waits announceDelay and announces
// only if the log has not grown meanwhile (under load it always has, so
// load adds no announcements). A commit a follower is waiting for (a
// forwarded proposal, which the follower answers from its own FSM) is
// announced at once. Announcements are coalesced: one round at a time
// (and one notice in flight per follower), then one more if commits came
// meanwhile.
type commitAnnouncer struct {
	mu      sync.Mutex
	running bool
	again   bool
	urgent  bool
}

// announceDelay is how long the leader waits for a later entry to carry
// the commit index of its own proposals before it appends a barrier.
const announceDelay = time.Millisecond

// announceCommit makes sure followers hear of the commits made so far:
// at once when urgent (a follower waits for it), else unless an entry
// appended within announceDelay carries the news. It never blocks.
func (n *Raft) announceCommit(urgent bool) {
	if n.soleServer() {
		return // no follower to tell: a barrier would only cost an fsync
	}
	a := &n.announcer
	a.mu.Lock()
	a.urgent = a.urgent || urgent
	if a.running {
		a.again = true
		a.mu.Unlock()
		return
	}
	a.running = true
	a.mu.Unlock()
	if !n.helpers.start(n.runAnnouncer) {
		a.mu.Lock()
		a.running = false
		a.mu.Unlock()
	}
}

func (n *Raft) runAnnouncer() {
	a := &n.announcer
	for {
		a.mu.Lock()
		urgent := a.urgent
		a.urgent, a.again = false, false
		a.mu.Unlock()

		needed := true
		if !urgent {
			last := n.raft.LastIndex()
			t := time.NewTimer(announceDelay)
			select {
			case <-t.C:
			case <-n.stopping:
				t.Stop()
			}
			needed = n.raft.LastIndex() == last
		}
		if needed && !n.tellCommit() {
			// No notice could be sent (notice.go): a barrier, appended
			// at once; waiting for it only paces the next one. On a
			// node that is no longer the leader it fails at once.
			_ = n.awaitFuture(context.Background(), n.raft.Barrier(applyTimeout))
			n.m.announcements.Inc()
		}
		a.mu.Lock()
		if !a.again {
			a.running = false
			a.mu.Unlock()
			// Activity paused: make sure no follower is left behind.
			n.kickCatchUp()
			return
		}
		a.mu.Unlock()
	}
}

// helpers runs the announcer's and the catch-up's goroutines so that Run
// can wait for them; once closed it starts no more.
type helpers struct {
	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup
}

// start runs fn on a new goroutine unless the helpers are closed.
func (h *helpers) start(fn func()) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return false
	}
	h.wg.Go(fn)
	return true
}

// awaitFuture waits for a Raft future's answer, or until ctx ends or the node
// stops shutting down: hashicorp/raft can take a future (a barrier) and
// never answer it when it shuts down at that moment, and a helper
// waiting on it would hold up Run's shutdown for good. The waiter left
// behind then ends with the process.
func (n *Raft) awaitFuture(ctx context.Context, f raft.Future) error {
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-n.stopping:
		return ErrStopped
	}
}

func (h *helpers) closeAndWait() {
	h.mu.Lock()
	h.closed = true
	h.mu.Unlock()
	h.wg.Wait()
}

// soleServer reports whether the Raft configuration holds this server
// alone (a single node): there is then no follower, voter or not, to
// tell of commits. Raft keeps the latest configuration in an atomic
// value, so this costs no round trip to its loop. When a node joins, its
// configuration entry is replicated like any other and announcements
// resume with the next commit.
//
// One server that is another node is not a single node: a joiner whose
// log holds the leader's first entries (the configuration the leader was
// bootstrapped with, not yet the one that added it), or a node removed
// from a cluster of two. Such a node has not applied what the cluster
// committed, and its read barrier must ask the leader.
func (n *Raft) soleServer() bool {
	servers := n.raft.GetConfiguration().Configuration().Servers
	return len(servers) == 1 && servers[0].ID == raft.ServerID(n.cfg.NodeName)
}
