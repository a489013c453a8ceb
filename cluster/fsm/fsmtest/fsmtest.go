// Package fsmtest gives the tests of the state's owners (auth, users,
// archive) a Raft log without Raft: a Harness proposes commands by
// applying them at once, as committed entries, through a real fsm.FSM on
// a Badger database in the test's temporary directory. It can also
// batch proposals into one entry, refuse like a cluster without quorum,
// lose the returned value like a forwarded proposal, and feed the same
// log to follower FSMs.
package fsmtest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/hashicorp/raft"

	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/internal/waitnotice"
	"github.com/edgechat/edgechat/internal/wire"
)

// ErrDown is what a Harness set down with SetErr(ErrDown) refuses with: a
// cluster that cannot commit (it wraps wire.ErrUnavailable).
var ErrDown = fmt.Errorf("fsmtest: no quorum: %w", wire.ErrUnavailable)

// Option adjusts a Harness.
type Option func(*Harness)

// WithBatch makes Propose wait until n proposals are pending and apply
// them together in ONE entry, as the cluster's batching proposer may; the
// later commands of the entry see the earlier ones' writes. n <= 1 applies
// each proposal as its own entry (the default).
func WithBatch(n int) Option { return func(h *Harness) { h.batch = n } }

// Harness is a synchronous, single-node Raft log in front of a real FSM.
// Register the owners' handlers on FSM (by building the service with it)
// before proposing. It is safe for concurrent use.
type Harness struct {
	DB  *badger.DB // the database the FSM applies into
	FSM *fsm.FSM   // the leader's FSM: Propose's results come from it

	batch    int
	memTable int64                               // 0: OpenDB's
	opts     func(badger.Options) badger.Options // nil: OpenDB's

	mu        sync.Mutex
	err       error // when set, proposals fail with it and apply nothing
	lose      bool  // drop handler values, keep errors
	before    func()
	index     uint64
	logs      []*raft.Log
	pending   []pendingCmd
	followers []*fsm.FSM
}

type pendingCmd struct {
	cmd  fsm.Command
	done chan fsm.Result
}

// New opens a Badger database in t.TempDir() (closed by t.Cleanup) and
// an FSM over it.
func New(t testing.TB, opts ...Option) *Harness {
	t.Helper()
	h := &Harness{}
	for _, o := range opts {
		o(h)
	}
	if h.opts != nil {
		h.DB = openDBWith(t, h.opts)
	} else {
		h.DB = openDB(t, h.memTable)
	}
	h.FSM = fsm.New(h.DB, nil)
	return h
}

// WithMemTableSize opens the database with memtables of n bytes. Badger
// refuses a transaction above 15% of that (ErrTxnTooBig), so a small one
// makes the FSM split big entries (cluster/fsm apply) with few commands.
func WithMemTableSize(n int64) Option { return func(h *Harness) { h.memTable = n } }

// WithBadgerOptions opens the leader's database with the options fn
// makes of Badger's defaults for t.TempDir() instead of OpenDB's small
// ones (benchmarks that measure with a node's settings).
func WithBadgerOptions(fn func(badger.Options) badger.Options) Option {
	return func(h *Harness) { h.opts = fn }
}

func openDBWith(t testing.TB, fn func(badger.Options) badger.Options) *badger.DB {
	t.Helper()
	db, err := badger.Open(fn(badger.DefaultOptions(t.TempDir()).WithLogger(nil)))
	if err != nil {
		t.Fatalf("fsmtest: open badger: %v", err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// OpenDB opens a small Badger database in t.TempDir(), closed by
// t.Cleanup. Its tables are kept small so that many tests can run at
// once.
func OpenDB(t testing.TB) *badger.DB {
	t.Helper()
	return openDB(t, 0)
}

func openDB(t testing.TB, memTable int64) *badger.DB {
	t.Helper()
	if memTable <= 0 {
		memTable = 8 << 20
	}
	db, err := badger.Open(badger.DefaultOptions(t.TempDir()).WithLogger(nil).
		WithMemTableSize(memTable).WithValueThreshold(1 << 10).WithValueLogFileSize(8 << 20))
	if err != nil {
		t.Fatalf("fsmtest: open badger: %v", err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// NewFollower opens another database and FSM that apply every later entry
// right after the leader's, in the same order, as another node of the
// cluster would. Build the follower's service on the returned FSM (and
// its DB) before proposing.
func (h *Harness) NewFollower(t testing.TB) *fsm.FSM {
	t.Helper()
	f := fsm.New(OpenDB(t), nil)
	h.mu.Lock()
	h.followers = append(h.followers, f)
	h.mu.Unlock()
	return f
}

// Propose applies one command and returns its handler's value and error,
// like the cluster's proposer on the leader. With WithBatch it blocks
// until the batch is full. A done ctx refuses with wire.ErrUnavailable.
func (h *Harness) Propose(ctx context.Context, t byte, payload []byte) (any, error) {
	return h.ProposeAsync(ctx, t, payload)(ctx)
}

// ProposeAsync queues one command without waiting, like the cluster's
// ProposeAsync on the leader (commands apply in call order), and returns
// the wait for its result. With WithBatch the batch applies when it is
// full, so start a whole batch before waiting.
func (h *Harness) ProposeAsync(ctx context.Context, t byte, payload []byte) func(context.Context) (any, error) {
	if err := h.check(ctx); err != nil {
		return func(context.Context) (any, error) { return nil, err }
	}
	done := make(chan fsm.Result, 1)
	h.mu.Lock()
	h.pending = append(h.pending, pendingCmd{cmd: fsm.Command{Type: t, Payload: payload}, done: done})
	if len(h.pending) >= max(h.batch, 1) {
		h.flushLocked()
	}
	h.mu.Unlock()
	return func(ctx context.Context) (any, error) {
		select {
		case r := <-done:
			return r.Value, r.Err
		default:
			waitnotice.Blocking(ctx)
		}
		select {
		case r := <-done:
			return r.Value, r.Err
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: %v", wire.ErrUnavailable, ctx.Err())
		}
	}
}

// ProposeBatch applies cmds together as one entry, whatever WithBatch
// says, and returns one result per command.
func (h *Harness) ProposeBatch(ctx context.Context, cmds []fsm.Command) ([]fsm.Result, error) {
	if err := h.check(ctx); err != nil {
		return nil, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.applyLocked(cmds), nil
}

// check refuses a proposal as a cluster would and otherwise runs the
// BeforeNext hook.
func (h *Harness) check(ctx context.Context) error {
	h.mu.Lock()
	err, before := h.err, h.before
	if err == nil {
		h.before = nil
	}
	h.mu.Unlock()
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%w: %v", wire.ErrUnavailable, err)
	}
	if before != nil {
		before()
	}
	return nil
}

func (h *Harness) flushLocked() {
	cmds := make([]fsm.Command, len(h.pending))
	for i, pc := range h.pending {
		cmds[i] = pc.cmd
	}
	res := h.applyLocked(cmds)
	for i, pc := range h.pending {
		pc.done <- res[i]
	}
	h.pending = nil
}

func (h *Harness) applyLocked(cmds []fsm.Command) []fsm.Result {
	h.index++
	l := &raft.Log{Index: h.index, Type: raft.LogCommand, Data: fsm.EncodeBatch(cmds), AppendedAt: time.Now()}
	h.logs = append(h.logs, l)
	res := h.FSM.Apply(l).([]fsm.Result)
	for _, f := range h.followers {
		f.Apply(l)
	}
	if h.lose {
		res = append([]fsm.Result(nil), res...)
		for i := range res {
			res[i].Value = nil
		}
	}
	return res
}

// SetErr makes every proposal fail with err and apply nothing, until
// SetErr(nil). Use ErrDown for a cluster without quorum.
func (h *Harness) SetErr(err error) {
	h.mu.Lock()
	h.err = err
	h.mu.Unlock()
}

// LoseValues makes proposals return no handler value (errors still come
// through), as a proposal forwarded to the leader does when its result
// can no longer be read back.
func (h *Harness) LoseValues(lose bool) {
	h.mu.Lock()
	h.lose = lose
	h.mu.Unlock()
}

// BeforeNext runs fn once, just before the next proposal is applied (after
// the caller's own checks): a concurrent change that lands first.
func (h *Harness) BeforeNext(fn func()) {
	h.mu.Lock()
	h.before = fn
	h.mu.Unlock()
}

// Index is the Raft index of the last entry applied (0 before any).
func (h *Harness) Index() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.index
}

// SetIndex makes the next entry index i+1, as a node goes on after
// restoring a snapshot taken at i.
func (h *Harness) SetIndex(i uint64) {
	h.mu.Lock()
	h.index = i
	h.mu.Unlock()
}

// Logs returns the entries applied so far, oldest first.
func (h *Harness) Logs() []*raft.Log {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]*raft.Log(nil), h.logs...)
}

// Snapshot returns f's full snapshot: the state a leader sends a
// follower that needs one (FSM.OpenState). The snapshots a node stores
// for itself only refer to its database.
func Snapshot(t testing.TB, f *fsm.FSM) []byte {
	t.Helper()
	_, _, rc, err := f.OpenState()
	if err != nil {
		t.Fatalf("fsmtest: snapshot: %v", err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("fsmtest: snapshot: %v", err)
	}
	return b
}

// Restore replaces f's state with a snapshot from Snapshot.
func Restore(t testing.TB, f *fsm.FSM, snapshot []byte) {
	t.Helper()
	if err := f.Restore(io.NopCloser(bytes.NewReader(snapshot))); err != nil {
		t.Fatalf("fsmtest: restore: %v", err)
	}
}

// Dump returns every key under prefix and its value, leaving out the
// applied index (which every entry moves), so that a test can prove that a
// refused command changed nothing, or that two replicas hold the same
// state.
func Dump(t testing.TB, db *badger.DB, prefix string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := db.View(func(tx *badger.Txn) error {
		it := tx.NewIterator(badger.IteratorOptions{Prefix: []byte(prefix), PrefetchValues: true})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			if string(it.Item().Key()) == appliedKey {
				continue
			}
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			out[string(it.Item().KeyCopy(nil))] = string(v)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("fsmtest: dump %s: %v", prefix, err)
	}
	return out
}

// appliedKey is where the FSM keeps its applied index (fsm's own name for
// it is not exported).
const appliedKey = "r/sys/applied"
