package broker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/edgechat/edgechat/broker/routes"
	"github.com/edgechat/edgechat/cluster"
	"github.com/edgechat/edgechat/internal/backoff"
	"github.com/edgechat/edgechat/internal/peerrpc"
	"github.com/edgechat/edgechat/internal/wire"
)

// Cluster is the broker's view of its cluster (the lead adapts
// *cluster.Raft). A nil Deps.Cluster is a single node: no routes, no
// forwarding.
type Cluster interface {
	// Self is this node's name.
	Self() string
	// Members are the current members (cluster.Stats().Members).
	Members() []cluster.Member
	// MembersChanged is closed at the next change of the member list
	// (call it again after it fires, before reading Members).
	MembersChanged() <-chan struct{}
	// Call invokes method on the node at peerAddr (its cluster address).
	Call(ctx context.Context, peerAddr, method string, req, resp any) error
	// RegisterRPC serves methods as "name.Method".
	RegisterRPC(name string, methods peerrpc.Methods) error
}

// Proposer commits route commands through the Raft log (implemented by
// *cluster.Raft).
type Proposer interface {
	Propose(ctx context.Context, t byte, payload []byte) (any, error)
}

// routeKeeper keeps this node's routes in the replicated table equal to
// its local subscriptions. Hooks record subscriptions in a local set
// keyed by filter; a single worker compares "has a local subscriber" with
// "has a route" for every filter marked dirty and proposes the
// difference. Only a node's first subscriber of a filter waits for Raft,
// in ensure, before its SUBACK.
type routeKeeper struct {
	b     *Broker
	self  string
	prop  Proposer
	table *routes.Table

	mu       sync.Mutex
	subs     map[string]map[string]struct{} // route filter → client ID + "\x00" + subscription filter
	byClient map[string]map[string]struct{} // client ID → subscription filters
	dirty    map[string]struct{}
	leaving  bool // this node's routes were dropped on purpose: add none
	// withdrawing holds the filters whose withdrawal reconcile is
	// proposing; the channel closes when the proposal returns.
	withdrawing map[string]chan struct{}
	// uncertain holds the filters whose last withdrawal failed: it may
	// still commit (an entry appended before a leader change), so the
	// route the table shows may be about to go. Only a proposal of this
	// node for the filter committed since settles it: Raft commits in log
	// order, so by then the withdrawal committed before it or never will.
	// Until then a wanted route is added again rather than trusted.
	uncertain map[string]struct{}
	wake      chan struct{}
}

func newRouteKeeper(b *Broker, self string, prop Proposer, table *routes.Table) *routeKeeper {
	k := &routeKeeper{b: b, self: self, prop: prop, table: table,
		subs: map[string]map[string]struct{}{}, byClient: map[string]map[string]struct{}{},
		dirty: map[string]struct{}{}, wake: make(chan struct{}, 1), withdrawing: map[string]chan struct{}{}, uncertain: map[string]struct{}{}}
	table.OnChange(func(node, filter string) {
		switch {
		case node == self && filter != "":
			k.markDirty(filter)
		case node == self || node == "":
			// Our routes were dropped (or the table reloaded): check all.
			k.markAll()
		}
	})
	return k
}

// routeFilter is the filter a subscription routes on: the filter of a
// shared subscription, nothing for $-topics (node-local, like $SYS).
func routeFilter(sub string) string {
	if f, ok := sharedFilter(sub); ok {
		sub = f
	}
	if sub == "" || strings.HasPrefix(sub, "$") || routes.ValidFilter(sub) != nil {
		return ""
	}
	return sub
}

func (k *routeKeeper) subscribed(clientID, sub string) {
	rf := routeFilter(sub)
	if rf == "" {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	set := k.subs[rf]
	if set == nil {
		set = map[string]struct{}{}
		k.subs[rf] = set
	}
	set[clientID+"\x00"+sub] = struct{}{}
	cs := k.byClient[clientID]
	if cs == nil {
		cs = map[string]struct{}{}
		k.byClient[clientID] = cs
	}
	cs[sub] = struct{}{}
	if len(set) == 1 {
		k.markDirtyLocked(rf)
	}
}

func (k *routeKeeper) unsubscribed(clientID, sub string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.unsubscribedLocked(clientID, sub)
}

func (k *routeKeeper) unsubscribedLocked(clientID, sub string) {
	if cs := k.byClient[clientID]; cs != nil {
		delete(cs, sub)
		if len(cs) == 0 {
			delete(k.byClient, clientID)
		}
	}
	rf := routeFilter(sub)
	set := k.subs[rf]
	if set == nil {
		return
	}
	delete(set, clientID+"\x00"+sub)
	if len(set) == 0 {
		delete(k.subs, rf)
		k.markDirtyLocked(rf)
	}
}

// clientGone forgets every subscription of a client whose session ended.
func (k *routeKeeper) clientGone(clientID string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for sub := range k.byClient[clientID] {
		k.unsubscribedLocked(clientID, sub)
	}
}

// local reports whether filter has a local subscriber.
func (k *routeKeeper) local(filter string) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.subs[filter]) > 0
}

// localCount is the number of filters with local subscribers.
func (k *routeKeeper) localCount() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.subs)
}

func (k *routeKeeper) markDirty(filter string) {
	k.mu.Lock()
	k.markDirtyLocked(filter)
	k.mu.Unlock()
}

func (k *routeKeeper) markDirtyLocked(filter string) {
	k.dirty[filter] = struct{}{}
	select {
	case k.wake <- struct{}{}:
	default:
	}
}

// markAll marks every local filter and every route of this node: a full
// reconcile (at start, after our routes were dropped, periodically).
func (k *routeKeeper) markAll() {
	mine := k.table.Filters(k.self)
	k.mu.Lock()
	defer k.mu.Unlock()
	for f := range k.subs {
		k.dirty[f] = struct{}{}
	}
	for _, f := range mine {
		k.dirty[f] = struct{}{}
	}
	select {
	case k.wake <- struct{}{}:
	default:
	}
}

// run is the worker: it reconciles dirty filters, retrying with backoff
// while the cluster cannot commit, and does a full reconcile every
// resync (which also withdraws routes left from before a crash).
// ensure commits this node's route for a newly subscribed filter before
// the SUBACK goes out (blocking only this client, and only for the first
// subscriber of a filter on this node). Durable messages are applied in
// log order, so a message committed after the route reaches this node
// wherever it was published. It reports whether the route is in place
// (or none is needed); on failure the keeper retries in the background,
// and the caller refuses a chat subscriber (hook.OnSubscribed).
func (k *routeKeeper) ensure(ctx context.Context, sub string) bool {
	rf := routeFilter(sub)
	if rf == "" {
		return true
	}
	k.mu.Lock()
	leaving, withdrawal := k.leaving, k.withdrawing[rf]
	k.mu.Unlock()
	if withdrawal != nil {
		// The last subscriber of rf left a moment ago and its route is
		// being withdrawn: the route seen now is about to go. Wait for
		// the withdrawal, then add the route again below.
		select {
		case <-withdrawal:
		case <-ctx.Done():
			return false
		}
	}
	k.mu.Lock()
	_, mustAdd := k.uncertain[rf]
	k.mu.Unlock()
	if !mustAdd && k.table.Has(k.self, rf) {
		return true
	}
	if leaving {
		return true // a leaving node adds no routes; its clients move on
	}
	payload, err := routes.EncodeRoute(k.self, rf)
	if err != nil {
		return true // cannot happen: routeFilter validated it
	}
	pctx, cancel := context.WithTimeout(ctx, min(k.b.cfg.CommitTimeout, 5*time.Second))
	defer cancel()
	// A proposal fails fast while a leader is being elected (the old one
	// refuses or is gone, the new one is not known yet): try again within
	// the budget rather than turn the client away. Adding a route twice
	// is harmless, so a try whose fate was unknown is simply repeated.
	retry := backoff.New(20*time.Millisecond, 500*time.Millisecond)
	for {
		_, err := k.prop.Propose(pctx, wire.CmdRouteAdd, payload)
		if err == nil {
			k.b.m.routeProposals.WithLabelValues("add", "ok").Inc()
			k.settled(rf)
			return true
		}
		k.b.m.routeProposals.WithLabelValues("add", "error").Inc()
		if !mustAdd && k.table.Has(k.self, rf) {
			return true // an earlier try committed after all
		}
		if errors.Is(err, wire.ErrInvalid) || retry.Sleep(pctx) != nil {
			k.markDirty(rf)
			return false
		}
	}
}

func (k *routeKeeper) run(ctx context.Context, resync time.Duration) {
	reconcileLoop(ctx, resync, k.wake, k.markAll, k.reconcile, k.b.log, "route")
}

// reconcile proposes the difference for every dirty filter. On a failure
// the filters not yet done stay dirty.
func (k *routeKeeper) reconcile(ctx context.Context) error {
	k.mu.Lock()
	dirty := k.dirty
	k.dirty = map[string]struct{}{}
	k.mu.Unlock()
	var failed error
	for f := range dirty {
		if failed != nil {
			k.markDirty(f)
			continue
		}
		payload, err := routes.EncodeRoute(k.self, f)
		if err != nil {
			continue // cannot happen: routeFilter validated it
		}
		// Deciding to withdraw and marking the withdrawal happen under
		// the lock that subscribed takes: a subscriber that arrives after
		// the decision finds the mark in ensure and waits it out.
		var withdrawn chan struct{}
		k.mu.Lock()
		want := len(k.subs[f]) > 0 && !k.leaving
		has := k.table.Has(k.self, f)
		if _, ok := k.uncertain[f]; ok && want {
			has = false // the route shown may be withdrawn yet: add it again
		}
		if !want && has {
			withdrawn = make(chan struct{})
			k.withdrawing[f] = withdrawn
		}
		k.mu.Unlock()
		if want == has {
			continue
		}
		t, op := wire.CmdRouteDel, "del"
		if want {
			t, op = wire.CmdRouteAdd, "add"
		}
		pctx, cancel := context.WithTimeout(ctx, k.b.cfg.CommitTimeout)
		_, err = k.prop.Propose(pctx, t, payload)
		cancel()
		if withdrawn != nil {
			k.mu.Lock()
			delete(k.withdrawing, f)
			if err != nil {
				// Marked before the waiters in ensure go on.
				k.uncertain[f] = struct{}{}
			}
			k.mu.Unlock()
			close(withdrawn)
		}
		if err != nil {
			k.b.m.routeProposals.WithLabelValues(op, "error").Inc()
			k.markDirty(f)
			failed = fmt.Errorf("route %s %q: %w", op, f, err)
			continue
		}
		k.b.m.routeProposals.WithLabelValues(op, "ok").Inc()
		k.settled(f)
	}
	return failed
}

// settled records that a proposal of this node for filter committed:
// any earlier withdrawal of it has committed or never will.
func (k *routeKeeper) settled(filter string) {
	k.mu.Lock()
	delete(k.uncertain, filter)
	k.mu.Unlock()
}

// DropNodeRoutes removes every route of nodeName from the replicated
// table. Call it when a node leaves or is removed; for this node itself
// it also stops adding routes (it is leaving). A no-op on a single node.
func (b *Broker) DropNodeRoutes(ctx context.Context, nodeName string) error {
	if b.rk == nil {
		return nil
	}
	payload, err := routes.EncodeDropNode(nodeName)
	if err != nil {
		return err
	}
	if nodeName == b.rk.self {
		b.rk.mu.Lock()
		b.rk.leaving = true
		b.rk.mu.Unlock()
	}
	// One command deletes a bounded number of routes; repeat until none
	// are left (the local index follows each commit).
	for range 1000 {
		if _, err := b.rk.prop.Propose(ctx, wire.CmdRoutesDropNode, payload); err != nil {
			return fmt.Errorf("broker: drop routes of %s: %w", nodeName, err)
		}
		if len(b.rk.table.Filters(nodeName)) == 0 {
			return nil
		}
	}
	return fmt.Errorf("broker: drop routes of %s: still %d left: %w", nodeName, len(b.rk.table.Filters(nodeName)), wire.ErrUnavailable)
}

// CancelLeave undoes what DropNodeRoutes and DropNodeClients did for
// this node itself when its leave failed: the keepers add its routes and
// register its connections again.
func (b *Broker) CancelLeave() {
	if b.rk != nil {
		b.rk.mu.Lock()
		b.rk.leaving = false
		b.rk.mu.Unlock()
		b.rk.markAll()
	}
	if b.ck != nil {
		b.ck.mu.Lock()
		b.ck.leaving = false
		b.ck.mu.Unlock()
		b.ck.markAll()
	}
}

// RouteTable is the replicated route table (nil on a single node).
func (b *Broker) RouteTable() *routes.Table {
	if b.rk == nil {
		return nil
	}
	return b.rk.table
}
