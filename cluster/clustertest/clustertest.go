// Package clustertest runs several Raft members in one test process over
// hashicorp/raft's in-memory transport, each applying into a real
// fsm.FSM on its own Badger database, in the style of raft.MakeCluster.
// Members can be partitioned from each other and healed, which is what
// unit tests of the FSM's replicated state (routes, registry) need
// without sockets. The multi-node tests over TCP, with forwarding, live
// in package cluster.
package clustertest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/internal/wire"
)

// ErrNotLeader is returned by Server.Propose on a member that is not the
// leader; it wraps wire.ErrUnavailable like the real node's errors.
var ErrNotLeader = fmt.Errorf("clustertest: not the leader: %w", wire.ErrUnavailable)

// Option adjusts StartInmem.
type Option func(*options)

type options struct {
	register func(m *Server)
	timeout  time.Duration
}

// WithHandlers installs FSM handlers on every member before Raft starts
// (for example the routing package's Register).
func WithHandlers(fn func(m *Server)) Option { return func(o *options) { o.register = fn } }

// WithTimeout sets the heartbeat and election timeouts (default 50 ms).
func WithTimeout(d time.Duration) Option { return func(o *options) { o.timeout = d } }

// Server is one Raft server of the harness.
type Server struct {
	ID    string
	Raft  *raft.Raft
	FSM   *fsm.FSM
	DB    *badger.DB
	Trans *raft.InmemTransport
}

// Cluster is a set of members bootstrapped as voters of one cluster.
type Cluster struct {
	t       testing.TB
	Servers []*Server

	mu  sync.Mutex
	cut map[[2]int]bool // disconnected pairs (i<j)
}

// StartInmem starts n members named m1..mN, all voters, connected to
// each other, and stops them when the test ends.
func StartInmem(t testing.TB, n int, opts ...Option) *Cluster {
	t.Helper()
	o := options{timeout: 50 * time.Millisecond}
	for _, opt := range opts {
		opt(&o)
	}
	c := &Cluster{t: t, cut: map[[2]int]bool{}}
	var servers []raft.Server
	for i := range n {
		addr, trans := raft.NewInmemTransport("")
		m := &Server{ID: fmt.Sprintf("m%d", i+1), Trans: trans}
		db, err := badger.Open(badger.DefaultOptions(t.TempDir()).WithLogger(nil).
			WithMemTableSize(8 << 20).WithNumMemtables(2).
			WithBlockCacheSize(4 << 20).WithIndexCacheSize(4 << 20))
		if err != nil {
			t.Fatalf("clustertest: open badger: %v", err)
		}
		m.DB = db
		m.FSM = fsm.New(db, nil)
		if o.register != nil {
			o.register(m)
		}
		c.Servers = append(c.Servers, m)
		servers = append(servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(m.ID), Address: addr})
	}
	for _, a := range c.Servers {
		for _, b := range c.Servers {
			if a != b {
				a.Trans.Connect(b.Trans.LocalAddr(), b.Trans)
			}
		}
	}
	for _, m := range c.Servers {
		conf := raft.DefaultConfig()
		conf.LocalID = raft.ServerID(m.ID)
		conf.HeartbeatTimeout = o.timeout
		conf.ElectionTimeout = o.timeout
		conf.LeaderLeaseTimeout = o.timeout
		conf.CommitTimeout = 5 * time.Millisecond
		conf.Logger = hclog.NewNullLogger()
		logs := raft.NewInmemStore()
		snaps := raft.NewInmemSnapshotStore()
		if err := raft.BootstrapCluster(conf, logs, logs, snaps, m.Trans, raft.Configuration{Servers: servers}); err != nil {
			t.Fatalf("clustertest: bootstrap %s: %v", m.ID, err)
		}
		r, err := raft.NewRaft(conf, m.FSM, logs, logs, snaps, m.Trans)
		if err != nil {
			t.Fatalf("clustertest: start %s: %v", m.ID, err)
		}
		m.Raft = r
	}
	t.Cleanup(func() {
		for _, m := range c.Servers {
			_ = m.Raft.Shutdown().Error()
			_ = m.DB.Close()
		}
	})
	return c
}

// Server returns the server with the given ID.
func (c *Cluster) Server(id string) *Server {
	for _, m := range c.Servers {
		if m.ID == id {
			return m
		}
	}
	c.t.Fatalf("clustertest: no member %s", id)
	return nil
}

// Partition cuts the named members off from all the others; they stay
// connected among themselves. Partitions add up until Heal.
func (c *Cluster) Partition(ids ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, a := range c.Servers {
		for j, b := range c.Servers {
			if i < j && slices.Contains(ids, a.ID) != slices.Contains(ids, b.ID) {
				a.Trans.Disconnect(b.Trans.LocalAddr())
				b.Trans.Disconnect(a.Trans.LocalAddr())
				c.cut[[2]int{i, j}] = true
			}
		}
	}
}

// Heal reconnects every pair that a Partition cut.
func (c *Cluster) Heal() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for p := range c.cut {
		a, b := c.Servers[p[0]], c.Servers[p[1]]
		a.Trans.Connect(b.Trans.LocalAddr(), b.Trans)
		b.Trans.Connect(a.Trans.LocalAddr(), a.Trans)
	}
	clear(c.cut)
}

// Leader waits (up to 10 s) until exactly one member among ids (all
// members when none are given) is leader, and returns it.
func (c *Cluster) Leader(ids ...string) *Server {
	c.t.Helper()
	var leader *Server
	checkFor(c.t, 10*time.Second, 5*time.Millisecond, func() error {
		leader = nil
		for _, m := range c.Servers {
			if len(ids) > 0 && !slices.Contains(ids, m.ID) {
				continue
			}
			if m.Raft.State() == raft.Leader {
				if leader != nil {
					return fmt.Errorf("two leaders: %s and %s", leader.ID, m.ID)
				}
				leader = m
			}
		}
		if leader == nil {
			return errors.New("no leader")
		}
		return nil
	})
	return leader
}

// Propose appends cmds as one entry through this member, which must be
// the leader, and returns the results its FSM computed and the entry's
// log index. Failures wrap wire.ErrUnavailable.
func (m *Server) Propose(ctx context.Context, cmds ...fsm.Command) ([]fsm.Result, uint64, error) {
	if m.Raft.State() != raft.Leader {
		return nil, 0, ErrNotLeader
	}
	timeout := 5 * time.Second
	if d, ok := ctx.Deadline(); ok {
		timeout = max(time.Until(d), time.Millisecond)
	}
	f := m.Raft.Apply(fsm.EncodeBatch(cmds), timeout)
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		if err != nil {
			return nil, 0, fmt.Errorf("%w: %w", wire.ErrUnavailable, err)
		}
	case <-ctx.Done():
		return nil, 0, fmt.Errorf("%w: %w", wire.ErrUnavailable, ctx.Err())
	}
	res, ok := f.Response().([]fsm.Result)
	if !ok {
		return nil, 0, fmt.Errorf("clustertest: unexpected response %T", f.Response())
	}
	return res, f.Index(), nil
}

// Propose appends cmds through the current leader (waiting for one).
func (c *Cluster) Propose(ctx context.Context, cmds ...fsm.Command) ([]fsm.Result, uint64, error) {
	return c.Leader().Propose(ctx, cmds...)
}

// WaitApplied waits until every member (or those named) has applied the
// command entry at index (as Propose returned it) into its FSM. Only
// command entries reach the FSM, so pass a command's index, not Raft's
// LastIndex (which may be a no-op or configuration entry).
func (c *Cluster) WaitApplied(index uint64, ids ...string) {
	c.t.Helper()
	checkFor(c.t, 10*time.Second, 5*time.Millisecond, func() error {
		for _, m := range c.Servers {
			if len(ids) > 0 && !slices.Contains(ids, m.ID) {
				continue
			}
			// The FSM's own index: Raft's AppliedIndex moves when an
			// entry is handed to the FSM, before it is applied.
			got, err := m.FSM.AppliedIndex()
			if err != nil {
				return err
			}
			if got < index {
				return fmt.Errorf("%s applied %d < %d", m.ID, got, index)
			}
		}
		return nil
	})
}

// checkFor is testutil.CheckFor: poll until fn succeeds or fail after total.
var checkFor = testutil.CheckFor
