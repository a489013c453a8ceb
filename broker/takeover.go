package broker

import (
	"context"
	"fmt"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgechat/edgechat/broker/registry"
	"github.com/edgechat/edgechat/internal/wire"
)

// Session takeover across nodes. Every established session is registered
// in the replicated client registry ("client X is on this node,
// connection G"), asynchronously: CONNECT never waits for Raft. Every
// node applies every registration in the same log order; a node that
// holds a live connection of X whose own registration committed earlier
// disconnects it (v5 DISCONNECT 0x8E session taken over) and drops its
// session. A connection whose registration has not committed yet is
// newer than anything committed so far and stays: its own registration
// will take over the other node's connection when it commits. So the
// registration committed last wins, and every node agrees which it is.
//
// A connection that ends withdraws the entry only if it still names that
// connection (CmdClientWithdraw is conditional). Like the route keeper,
// one worker reconciles dirty client IDs ("has a live connection here"
// against "the registry names it") and retries while Raft cannot commit.

// takeoverParallel bounds the proposals one reconcile round has in flight.
const takeoverParallel = 32

type localClient struct {
	cl  *mqtt.Client
	gen uint64
	seq uint64 // log position of this connection's registration; 0 until committed
}

type clientKeeper struct {
	b     *Broker
	self  string
	prop  Proposer
	table *registry.Table

	mu      sync.Mutex
	local   map[string]*localClient
	dirty   map[string]struct{}
	leaving bool
	wake    chan struct{}
}

func newClientKeeper(b *Broker, self string, prop Proposer, table *registry.Table) *clientKeeper {
	k := &clientKeeper{b: b, self: self, prop: prop, table: table,
		local: map[string]*localClient{}, dirty: map[string]struct{}{}, wake: make(chan struct{}, 1)}
	table.OnChange(k.onChange)
	return k
}

// established records a new live connection (OnSessionEstablished).
func (k *clientKeeper) established(cl *mqtt.Client, gen uint64) {
	if registry.ValidClientID(cl.ID) != nil {
		return
	}
	k.mu.Lock()
	k.local[cl.ID] = &localClient{cl: cl, gen: gen}
	k.markLocked(cl.ID)
	k.mu.Unlock()
}

// disconnected forgets a connection that ended (OnDisconnect); a
// connection already replaced (local takeover) or taken over by another
// node changes nothing.
func (k *clientKeeper) disconnected(cl *mqtt.Client) {
	k.mu.Lock()
	if lc := k.local[cl.ID]; lc != nil && lc.cl == cl {
		delete(k.local, cl.ID)
		k.markLocked(cl.ID)
	}
	k.mu.Unlock()
}

// onChange runs on the FSM goroutine after each committed change.
func (k *clientKeeper) onChange(c registry.Change) {
	if c.ClientID == "" {
		if c.Node == "" || c.Node == k.self {
			k.markAll() // restored, or our entries were dropped
		}
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	lc := k.local[c.ClientID]
	switch {
	case lc == nil:
		if c.Set && c.Entry.Node != k.self {
			// No live connection here, but perhaps a persistent session
			// left offline: the client is on another node now, and a
			// session never moves between nodes. Left here it kept its
			// subscriptions and routes, queued what was sent meanwhile
			// and was resumed, stale, should the client come back to
			// this node (though a clean start there discarded it).
			if cur, ok := k.b.srv.Clients.Get(c.ClientID); ok && cur.Closed() {
				go k.b.srv.EndSession(cur) // AfterCommit must not block
			}
		}
	case !c.Set:
		k.markLocked(c.ClientID)
	case c.Entry.Node == k.self:
		if lc.gen == c.Entry.Gen {
			lc.seq = c.Entry.Seq
		}
	case lc.seq != 0 && lc.seq < c.Entry.Seq:
		// Another node registered X after our connection's registration:
		// ours is the older one.
		delete(k.local, c.ClientID)
		k.b.m.takeovers.Inc()
		k.b.log.Info("session taken over by another node", "client", c.ClientID, "node", c.Entry.Node)
		go k.b.takeOver(lc.cl) // AfterCommit must not block on a client's socket
	}
}

// takeOver disconnects a client whose client ID is now live on another
// node and drops its session here (a persistent one would otherwise keep
// its subscriptions, routes and queue on this node until it expires).
func (b *Broker) takeOver(cl *mqtt.Client) {
	_ = b.srv.DisconnectClient(cl, packets.ErrSessionTakenOver)
	persistent := !((cl.Properties.ProtocolVersion == 5 && cl.Properties.Props.SessionExpiryInterval == 0) ||
		(cl.Properties.ProtocolVersion < 5 && cl.Properties.Clean))
	if !persistent {
		return // mochi ends a clean session itself
	}
	// Under the session's own lock (mochi patch 37): a local reconnection
	// taking the session over meanwhile keeps what it inherited.
	b.srv.EndSession(cl)
}

func (k *clientKeeper) markLocked(id string) {
	k.dirty[id] = struct{}{}
	select {
	case k.wake <- struct{}{}:
	default:
	}
}

func (k *clientKeeper) markAll() {
	mine, err := k.table.Clients(k.self)
	if err != nil {
		k.b.log.Warn("client registry scan failed", "error", err)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	for id := range k.local {
		k.dirty[id] = struct{}{}
	}
	for _, id := range mine {
		k.dirty[id] = struct{}{}
	}
	select {
	case k.wake <- struct{}{}:
	default:
	}
}

// run reconciles dirty client IDs until ctx ends, with backoff while the
// cluster cannot commit; a full reconcile every resync also withdraws
// entries left from before a crash.
func (k *clientKeeper) run(ctx context.Context, resync time.Duration) {
	reconcileLoop(ctx, resync, k.wake, k.markAll, k.reconcile, k.b.log, "client registry")
}

// reconcile proposes, for every dirty client ID, a registration of its
// live connection here or the withdrawal of this node's stale entry.
// Each ID appears once per round and rounds run one after the other, so
// the proposals of one ID keep their order.
func (k *clientKeeper) reconcile(ctx context.Context) error {
	k.mu.Lock()
	dirty := k.dirty
	k.dirty = map[string]struct{}{}
	k.mu.Unlock()
	sem := make(chan struct{}, takeoverParallel)
	var wg sync.WaitGroup
	var emu sync.Mutex
	var failed error
	for id := range dirty {
		e, ok, err := k.table.Lookup(id)
		if err != nil {
			k.redo(id)
			failed = err
			continue
		}
		k.mu.Lock()
		lc := k.local[id]
		var gen, seq uint64
		live := lc != nil && !k.leaving && !lc.cl.Closed()
		if live {
			gen, seq = lc.gen, lc.seq
		}
		k.mu.Unlock()
		// An entry counts as this connection's only once its commit was
		// seen here (seq): one left by an earlier run of this node can
		// carry the same node and gen, and the connection, never
		// registered, would then never be taken over.
		var t byte
		switch {
		case live && !(ok && e.Node == k.self && e.Gen == gen && seq != 0 && e.Seq == seq):
			t = wire.CmdClientRegister
		case !live && ok && e.Node == k.self:
			t, gen = wire.CmdClientWithdraw, e.Gen
		default:
			continue
		}
		payload, err := registry.EncodeClient(id, k.self, gen)
		if err != nil {
			continue // cannot happen: established validated the ID
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			op := "register"
			if t == wire.CmdClientWithdraw {
				op = "withdraw"
			}
			pctx, cancel := context.WithTimeout(ctx, k.b.cfg.CommitTimeout)
			_, err := k.prop.Propose(pctx, t, payload)
			cancel()
			if err != nil {
				k.b.m.registryProposals.WithLabelValues(op, "error").Inc()
				k.redo(id)
				emu.Lock()
				failed = fmt.Errorf("client %s %q: %w", op, id, err)
				emu.Unlock()
				return
			}
			k.b.m.registryProposals.WithLabelValues(op, "ok").Inc()
		}()
	}
	wg.Wait()
	return failed
}

func (k *clientKeeper) redo(id string) {
	k.mu.Lock()
	k.dirty[id] = struct{}{}
	k.mu.Unlock()
}

// DropNodeClients removes every client registry entry of nodeName. Call
// it when a node leaves or is removed; for this node itself it also
// stops registering (it is leaving). A no-op without a registry.
func (b *Broker) DropNodeClients(ctx context.Context, nodeName string) error {
	k := b.ck
	if k == nil {
		return nil
	}
	payload, err := registry.EncodeDropNode(nodeName)
	if err != nil {
		return err
	}
	if nodeName == k.self {
		k.mu.Lock()
		k.leaving = true
		k.mu.Unlock()
	}
	for range 1000 {
		v, err := k.prop.Propose(ctx, wire.CmdClientsDropNode, payload)
		if err != nil {
			return fmt.Errorf("broker: drop clients of %s: %w", nodeName, err)
		}
		if m, ok := v.(interface{ More() bool }); !ok || !m.More() {
			return nil
		}
	}
	return fmt.Errorf("broker: drop clients of %s: entries still left: %w", nodeName, wire.ErrUnavailable)
}

// Registry is the replicated client registry (nil without one).
func (b *Broker) Registry() *registry.Table {
	if b.ck == nil {
		return nil
	}
	return b.ck.table
}
