package presence

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgechat/edgechat/cluster"
	"github.com/edgechat/edgechat/internal/peerqueue"
	"github.com/edgechat/edgechat/internal/peerrpc"
	"github.com/edgechat/edgechat/internal/wire"
)

// Presence across the nodes of a cluster.
//
// Each user has a home node: the rendezvous (highest random weight) hash
// of the user ID over the current members, stable as long as membership
// is. Every node sends its own Connected, Disconnected and Heartbeat
// events for a user to the user's home, over node-to-node RPC
// ("Presence.Events"), through one ordered, retried queue per
// destination (a peerqueue.Set); the home runs the one state machine for the user and
// publishes the retained presence/{uid}, which the broker copies to every
// node. Connection IDs are unique per connection, so a takeover across
// nodes (Connected on n2, Disconnected of the old connection on n1, in
// either order) never publishes offline: at worst it starts a grace that
// the other event cancels.
//
// Membership changes move homes; the cluster announces them
// (MembersChanged), nothing polls. Then every node
//   - ends the connections it counts of the nodes that left (one removed
//     after a crash sent no Disconnected for them);
//   - re-announces (Connected) its live connections of each user whose
//     home moved, to the new home;
//   - forgets, without publishing, the state of users it no longer homes
//     (their new home takes over);
//   - adopts the users it newly homes from its locally retained
//     presence/{uid}: an online or inactive user it knows nothing else of
//     keeps that status, with a grace of one heartbeat interval plus the
//     grace period for a connection to be re-announced or a heartbeat to
//     arrive. That covers a home that died: the users' other nodes
//     re-announce, and a user whose only connection was on the dead node
//     goes offline after that grace.
//
// A member that is down (cluster.Member.Down: the leader marked it after
// it did not answer for a few seconds, or it is this node, cut off from
// any leader that long) homes nobody while a member is up, so a home
// that crashed or is cut off stops freezing its users: they move as if
// it had left, and back when it is up again. A node back from down
// adopts from the members' copies (it says hello again), not from its
// own, which missed what happened meanwhile.
//
// A home refuses a batch with an event for a user it does not home (its
// view of the membership differs); the sender retries it, dropping the
// events whose home moved meanwhile in its own view (the re-announcement
// covers them), until the views agree.
//
// A node that restarts comes back knowing nothing (a rolling upgrade, a
// crash): as a home it does not know the connections of the users it
// homes, and the other homes still count the connections it had before.
// So every node numbers its run (an incarnation, its start time) and
// sends it with its events; a home knows each connection by the node
// and run it is on (connKey). Once started, a node says hello to every
// other member ("Presence.Hello"); the member, like a home seeing a new
// run of a node in an events batch, ends the connections of that node's
// earlier runs (as if disconnected: the grace starts), re-announces its
// own live connections of the users the new node homes, and answers its
// copies of the retained presence/{uid}: the new node adopts the users
// it homes of them, as a new home does, and retains those it has no copy
// of yet (its broker lost them all), so that its subscribers get the
// current status. A user who left while their home was down goes
// offline after that adoption's grace; one still connected anywhere
// stays online. A node that stops says goodbye ("Presence.Bye"): the
// homes end its connections of that run at once, as the Disconnected of
// its clients, closed as it stops, would not get out any more.
//
// GET /presence/{uid} asks the home (RPC "Presence.Status"); when the
// home cannot be reached it answers from this node's retained copy.

// RPCService is the name of the presence RPC service.
const RPCService = "Presence"

const (
	eventsMethod = RPCService + ".Events"
	statusMethod = RPCService + ".Status"
	helloMethod  = RPCService + ".Hello"
	byeMethod    = RPCService + ".Bye"

	// DefaultForwardQueue bounds the events queued for one node.
	DefaultForwardQueue = 100_000

	forwardBatch   = 256
	forwardTimeout = 5 * time.Second
	statusTimeout  = 2 * time.Second
	retryMax       = time.Second
	// helloTimeout bounds one hello: its answer carries a copy of every
	// user's retained presence.
	helloTimeout = 30 * time.Second
	// byeTimeout bounds a stopping node's goodbyes.
	byeTimeout = time.Second
	// helloTries bounds the hellos to one member: a member that is down
	// says hello itself when it is back; an older one does not know it.
	helloTries = 30
)

// Event kinds.
const (
	EventConnected    byte = 1
	EventDisconnected byte = 2
	EventHeartbeat    byte = 3
)

// Cluster is the presence service's view of its cluster (the node adapts
// *cluster.Raft).
type Cluster interface {
	// Self is this node's name.
	Self() string
	// Members are the current members.
	Members() []cluster.Member
	// MembersChanged is closed at the next change of the member list
	// (call it again after it fires, before reading Members).
	MembersChanged() <-chan struct{}
	// Call invokes method on the node at peerAddr.
	Call(ctx context.Context, peerAddr, method string, req, resp any) error
	// RegisterRPC serves methods as "name.Method".
	RegisterRPC(name string, methods peerrpc.Methods) error
}

// Retained reads this node's copies of the retained presence/{uid}
// messages (the node adapts the broker).
type Retained interface {
	RetainedPresence(uid string) (wire.Presence, bool)
	EachRetainedPresence(fn func(uid string, p wire.Presence))
}

// Event is one presence event sent to a user's home. Exported for gob.
// Again marks a Connected that announces a live connection once more
// (to a new home), not a new connection: it does not make the user
// online (an inactive user stays inactive). Status is then the user's
// status as the sender retains it, for a home that has no copy of its
// own (restarted, it takes its copies back from the hello's answers,
// which may come later). Beat is, in a re-announcement, the user's last
// heartbeat the sender took while the user was connected there (zero:
// none): the heartbeats it had queued for the previous home are dropped
// when the home moves, and a node that was cut off may have taken
// heartbeats the other nodes never heard. A node of an earlier version
// sends none of the three.
type Event struct {
	Kind   byte
	UID    string
	ConnID string
	Again  bool
	Status string
	Beat   time.Time
}

// EventsArgs is a batch of events from one node. Inc is the sender's
// run (0 from a node of an earlier version).
type EventsArgs struct {
	From   string
	Events []Event
	Inc    uint64
}

// HelloArgs: node From started its run Inc.
type HelloArgs struct {
	From string
	Inc  uint64
}

// HelloReply is the member's copies of the retained presence/{uid}.
type HelloReply struct{ Users []UserPresence }

// UserPresence is one user's presence.
type UserPresence struct {
	UID      string
	Presence wire.Presence
}

// EventsReply: NotHome when the receiver does not home every user of the
// batch (nothing was applied).
type EventsReply struct{ NotHome bool }

// StatusArgs asks the home for a user's status.
type StatusArgs struct{ UID string }

// StatusReply is the home's answer.
type StatusReply struct {
	Presence wire.Presence
	NotHome  bool
}

// presenceRPC is the RPC service.
type presenceRPC struct{ s *Service }

func (r *presenceRPC) methods() peerrpc.Methods {
	return peerrpc.Methods{"Events": peerrpc.Method(r.Events), "Status": peerrpc.Method(r.Status),
		"Hello": peerrpc.Method(r.Hello), "Bye": peerrpc.Method(r.Bye)}
}

// Bye: a.From's run a.Inc ends; so do its connections.
func (r *presenceRPC) Bye(a *HelloArgs, _ *struct{}) error {
	c := r.s.cl
	c.mu.Lock()
	defer c.mu.Unlock()
	if a.Inc == 0 || a.From == c.self {
		return nil
	}
	c.ended[a.From] = a.Inc // later events of the ended run: see receive
	ended := connKey(a.From, a.Inc, "")
	c.s.dropConns(func(key string) bool { return strings.HasPrefix(key, ended) })
	return nil
}

// Events applies a batch of events for users this node homes.
func (r *presenceRPC) Events(a *EventsArgs, reply *EventsReply) error {
	reply.NotHome = !r.s.receive(a.From, a.Inc, a.Events)
	return nil
}

// Hello: a.From started (see the top of this file).
func (r *presenceRPC) Hello(a *HelloArgs, reply *HelloReply) error {
	c := r.s.cl
	c.mu.Lock()
	c.noteRunLocked(a.From, a.Inc)
	for uid, conns := range c.local {
		if c.homeLocked(uid) != a.From {
			continue
		}
		for id := range conns {
			c.routeLocked(c.againLocked(uid, id))
		}
	}
	c.mu.Unlock()
	// The copies need no lock (the new node adopts those it homes and
	// keeps a copy only where it has none): a node's every user, so not
	// while connections wait for c.mu.
	if c.retained != nil {
		c.retained.EachRetainedPresence(func(uid string, p wire.Presence) {
			reply.Users = append(reply.Users, UserPresence{UID: uid, Presence: p})
		})
	}
	return nil
}

// Status answers a user's status from this node's state machine.
func (r *presenceRPC) Status(a *StatusArgs, reply *StatusReply) error {
	if err := wire.ValidUserID(a.UID); err != nil {
		return fmt.Errorf("presence: %w", err)
	}
	c := r.s.cl
	c.mu.Lock()
	home := c.homeLocked(a.UID)
	c.mu.Unlock()
	if home != c.self {
		reply.NotHome = true
		return nil
	}
	reply.Presence = r.s.status(a.UID)
	return nil
}

type clusterState struct {
	s        *Service
	c        Cluster
	retained Retained
	restorer RetainedRestorer // nil: lost copies are not restored
	self     string
	inc      uint64        // this run of this node (its start time)
	kick     chan struct{} // refresh the member list now

	// queues send events to their users' homes; Keep drops the events
	// whose home moved (the re-announcement covers them).
	queues *peerqueue.Set[Event]
	// view is members for the queues' Keep and Sender, which must not
	// take mu (routeLocked pushes with mu held).
	view atomic.Pointer[[]cluster.Member]

	// mu orders everything that depends on the view: routing an event,
	// applying a received batch, changing the view. Lock order: mu, then
	// Service.mu; mu, then the queues' locks.
	mu        sync.Mutex
	members   []cluster.Member               // sorted by name; empty: only this node
	local     map[string]map[string]struct{} // uid → live connection IDs on this node
	beats     map[string]time.Time           // uid (with a live connection here) → the last heartbeat taken here
	runs      map[string]uint64              // node → its latest run seen
	ended     map[string]uint64              // node → its run that said goodbye
	helloed   bool                           // the hellos of this run (or of its return from down) are on their way
	restoring bool                           // the stored last seen is restored (once per run)
}

// attachClusterState gives s its cluster state (s.cl) and registers the
// presence RPCs, in that order.
func attachClusterState(s *Service, c Cluster, r Retained, restorer RetainedRestorer, maxQueue int, m *peerqueue.Metrics) error {
	cs := &clusterState{s: s, c: c, retained: r, restorer: restorer, self: c.Self(), inc: uint64(time.Now().UnixNano()),
		kick: make(chan struct{}, 1), local: map[string]map[string]struct{}{}, beats: map[string]time.Time{}, runs: map[string]uint64{}, ended: map[string]uint64{}}
	cs.view.Store(&[]cluster.Member{})
	cs.queues = peerqueue.NewSet(cs.send, peerqueue.Config[Event]{
		MaxItems:   maxQueue,
		MaxBatch:   forwardBatch,
		Timeout:    forwardTimeout,
		BackoffMin: 20 * time.Millisecond,
		BackoffMax: retryMax,
		Keep:       func(node string, e Event) bool { return home(*cs.view.Load(), cs.self, e.UID) == node },
		Metrics:    m,
		Logger:     s.log,
	})
	// The service must reach this state before a peer can call in: an
	// Events call served the moment the methods are registered (a peer
	// forwarding while this node starts) found s.cl still nil.
	s.cl = cs
	if err := c.RegisterRPC(RPCService, (&presenceRPC{s: s}).methods()); err != nil {
		return fmt.Errorf("presence: %w", err)
	}
	cs.refreshMembers()
	return nil
}

// home is the rendezvous hash winner for uid among members (self when
// there are none).
//
// Members down (cluster.Member.Down: marked by the leader, or this node
// cut off) home nobody while one member is up.
func home(members []cluster.Member, self, uid string) string {
	if len(members) == 0 {
		return self
	}
	up := slices.ContainsFunc(members, func(m cluster.Member) bool { return !m.Down })
	best, bestW := "", uint64(0)
	for _, m := range members {
		if up && m.Down {
			continue
		}
		if w := weight(m.Name, uid); best == "" || w > bestW {
			best, bestW = m.Name, w
		}
	}
	return best
}

// HomeAmong is the node of nodes that homes uid's presence, as Home
// answers on a member of a cluster of exactly these nodes (for tests
// that must know it without asking a node).
func HomeAmong(nodes []string, uid string) string {
	members := make([]cluster.Member, len(nodes))
	for i, n := range nodes {
		members[i].Name = n
	}
	return home(members, "", uid)
}

// weight is FNV-1a of node, 0, uid, finished with a mixer so that close
// inputs spread.
func weight(node, uid string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(node); i++ {
		h = (h ^ uint64(node[i])) * 1099511628211
	}
	h = (h ^ 0) * 1099511628211
	for i := 0; i < len(uid); i++ {
		h = (h ^ uint64(uid[i])) * 1099511628211
	}
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	return h
}

func (c *clusterState) homeLocked(uid string) string { return home(c.members, c.self, uid) }

// Home is the node that runs uid's presence state machine (this node
// when not clustered).
func (s *Service) Home(uid string) string {
	if s.cl == nil {
		return ""
	}
	s.cl.mu.Lock()
	defer s.cl.mu.Unlock()
	return s.cl.homeLocked(uid)
}

// Connected records that connection connID of uid is up on this node: the
// user is online from now, and a pending grace (a takeover or a quick
// reconnect) is cancelled. In a cluster the event goes to uid's home.
func (s *Service) Connected(uid, connID string) {
	c := s.cl
	if c == nil {
		s.connected(uid, connID)
		return
	}
	c.mu.Lock()
	set := c.local[uid]
	if set == nil {
		set = map[string]struct{}{}
		c.local[uid] = set
	}
	set[connID] = struct{}{}
	c.routeLocked(Event{Kind: EventConnected, UID: uid, ConnID: connID})
	c.mu.Unlock()
}

// Disconnected records that connection connID of uid ended (the moment
// its MQTT will would fire). When it was the user's last connection the
// grace period starts; offline is published only if no connection comes
// back before it ends. Unknown connections are ignored, so a late
// Disconnected of a taken-over session changes nothing.
func (s *Service) Disconnected(uid, connID string) {
	c := s.cl
	if c == nil {
		s.disconnected(uid, connID)
		return
	}
	c.mu.Lock()
	if set := c.local[uid]; set != nil {
		delete(set, connID)
		if len(set) == 0 {
			delete(c.local, uid)
			delete(c.beats, uid)
		}
	}
	c.routeLocked(Event{Kind: EventDisconnected, UID: uid, ConnID: connID})
	c.mu.Unlock()
}

// Heartbeat marks uid as seen now (MQTT presence/{uid}/heartbeat or
// POST /presence/heartbeat). It is O(1) and publishes only when the
// status changes. A heartbeat after the last connection ended (an HTTP
// client) cancels the grace: from then on the heartbeat timers decide.
func (s *Service) Heartbeat(uid string) {
	c := s.cl
	if c == nil {
		s.heartbeat(uid)
		return
	}
	c.mu.Lock()
	if c.local[uid] != nil {
		// For a re-announcement of the user's connections here.
		c.beats[uid] = s.clock.Now()
	}
	c.routeLocked(Event{Kind: EventHeartbeat, UID: uid})
	c.mu.Unlock()
}

// Status is uid's current presence; an unknown user is offline with a
// zero LastSeen. In a cluster it asks uid's home.
func (s *Service) Status(uid string) wire.Presence {
	return s.StatusContext(context.Background(), uid)
}

// StatusContext is Status with a context for the call to the home; when
// the home cannot answer it falls back to this node's retained copy of
// presence/{uid}.
func (s *Service) StatusContext(ctx context.Context, uid string) wire.Presence {
	c := s.cl
	if c == nil {
		return s.status(uid)
	}
	c.mu.Lock()
	h := c.homeLocked(uid)
	addr := c.addrLocked(h)
	c.mu.Unlock()
	if h == c.self {
		return s.status(uid)
	}
	if addr != "" {
		cctx, cancel := context.WithTimeout(ctx, statusTimeout)
		var reply StatusReply
		err := c.c.Call(cctx, addr, statusMethod, &StatusArgs{UID: uid}, &reply)
		cancel()
		if err == nil && !reply.NotHome {
			return reply.Presence
		}
		s.log.Debug("presence: home did not answer; using the retained copy", "user", uid, "home", h, "err", err)
	}
	if c.retained != nil {
		if p, ok := c.retained.RetainedPresence(uid); ok {
			return p
		}
	}
	return s.status(uid)
}

func (c *clusterState) addrLocked(node string) string {
	for _, m := range c.members {
		if m.Name == node {
			return m.Addr
		}
	}
	return ""
}

// routeLocked applies e here when this node is uid's home, else queues
// it for the home.
func (c *clusterState) routeLocked(e Event) {
	h := c.homeLocked(e.UID)
	if h == c.self {
		c.s.apply(c.self, c.inc, e)
		return
	}
	_ = c.queues.Push(h, e) // a full or closed queue counts the drop itself
}

// againLocked is the event that announces connection id of uid once
// more, to the user's new home.
func (c *clusterState) againLocked(uid, id string) Event {
	e := Event{Kind: EventConnected, UID: uid, ConnID: id, Again: true, Beat: c.beats[uid]}
	if c.retained != nil {
		if p, ok := c.retained.RetainedPresence(uid); ok {
			e.Status = p.Status
		}
	}
	return e
}

// apply applies an event of node from's run inc.
func (s *Service) apply(from string, inc uint64, e Event) {
	switch e.Kind {
	case EventConnected:
		if e.Again {
			s.reannounced(e.UID, connKey(from, inc, e.ConnID), e.Status, e.Beat)
			return
		}
		s.connected(e.UID, connKey(from, inc, e.ConnID))
	case EventDisconnected:
		s.disconnected(e.UID, connKey(from, inc, e.ConnID))
	case EventHeartbeat:
		s.heartbeat(e.UID)
	}
}

// connKey is how a home knows a connection: the node and the run of the
// node it is on, and its ID there.
func connKey(node string, inc uint64, connID string) string {
	return node + "\x00" + strconv.FormatUint(inc, 10) + "\x00" + connID
}

// noteRunLocked learns that node runs its run inc: the connections it
// had in earlier runs ended with them (it sent no Disconnected for
// them). 0 is a node of an earlier version that does not number runs.
// Runs are told apart, not ordered, by their number (a start time): a
// node restarted with its clock set back is a new run all the same. A
// run that said goodbye is not taken back (its late events); a process
// ends before the next run of its node starts, so nothing of an
// earlier run arrives after the next one's first event.
func (c *clusterState) noteRunLocked(node string, inc uint64) {
	if inc == 0 || inc == c.runs[node] || inc == c.ended[node] || node == c.self {
		return
	}
	c.runs[node] = inc
	cur := connKey(node, inc, "")
	prefix := node + "\x00"
	c.s.dropConns(func(key string) bool {
		return strings.HasPrefix(key, prefix) && !strings.HasPrefix(key, cur)
	})
}

// receive applies a batch of node from's run inc when this node homes
// every user in it.
func (s *Service) receive(from string, inc uint64, events []Event) bool {
	c := s.cl
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range events {
		if wire.ValidUserID(e.UID) != nil {
			continue // applied as a no-op below: never a reason to retry
		}
		if c.homeLocked(e.UID) != c.self {
			return false
		}
	}
	c.noteRunLocked(from, inc)
	for _, e := range events {
		if e.Kind == EventConnected && inc != 0 && inc == c.ended[from] {
			continue // a connection of a run that ended (Bye)
		}
		if wire.ValidUserID(e.UID) == nil {
			s.apply(from, inc, e)
		}
	}
	return true
}

// send is the queues' Sender: one Presence.Events call. A refusal
// (NotHome: the views differ) or a failure is retried by the queue,
// after Keep dropped the events whose home moved meanwhile.
func (c *clusterState) send(ctx context.Context, b peerqueue.Batch[Event]) error {
	addr := ""
	for _, m := range *c.view.Load() {
		if m.Name == b.Peer {
			addr = m.Addr
		}
	}
	err := fmt.Errorf("presence: %s is not a member", b.Peer)
	if addr != "" {
		var reply EventsReply
		err = c.c.Call(ctx, addr, eventsMethod, &EventsArgs{From: c.self, Events: b.Items, Inc: c.inc}, &reply)
		if err == nil && reply.NotHome {
			err = fmt.Errorf("presence: %s does not home these users yet", b.Peer)
		}
	}
	if err != nil {
		c.kickRefresh() // the view may be stale: refresh it now
		return fmt.Errorf("presence: send events: %w", err)
	}
	return nil
}

// hello tells member node that this node started and adopts the users
// it homes of those the member answers (see the top of this file).
func (c *clusterState) hello(ctx context.Context, node string) {
	wait := 20 * time.Millisecond
	for try := 1; ; try++ {
		c.mu.Lock()
		addr := c.addrLocked(node)
		c.mu.Unlock()
		if addr == "" {
			return // no longer a member
		}
		cctx, cancel := context.WithTimeout(ctx, helloTimeout)
		var reply HelloReply
		err := c.c.Call(cctx, addr, helloMethod, &HelloArgs{From: c.self, Inc: c.inc}, &reply)
		cancel()
		if err == nil {
			c.mu.Lock()
			for _, u := range reply.Users {
				if wire.ValidUserID(u.UID) == nil && c.homeLocked(u.UID) == c.self {
					c.s.adopt(u.UID, u.Presence)
				}
			}
			c.mu.Unlock()
			c.restore(reply.Users)
			return
		}
		if try == helloTries {
			c.s.log.Info("presence: no hello answer from a member; it says hello when it is back", "member", node, "err", err)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, retryMax)
	}
}

// bye tells every member that this node's run ends (see the top of
// this file), at most byeTimeout long.
func (c *clusterState) bye() {
	c.mu.Lock()
	members := c.members
	c.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), byeTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, m := range members {
		if m.Name == c.self {
			continue
		}
		wg.Go(func() {
			if err := c.c.Call(ctx, m.Addr, byeMethod, &HelloArgs{From: c.self, Inc: c.inc}, &struct{}{}); err != nil {
				c.s.log.Debug("presence: goodbye not delivered", "member", m.Name, "err", err)
			}
		})
	}
	wg.Wait()
}

// restore retains the copies of presence/{uid} this node has none of.
func (c *clusterState) restore(users []UserPresence) {
	if c.restorer == nil {
		return
	}
	for _, u := range users {
		if wire.ValidUserID(u.UID) != nil || u.Presence.Status == "" {
			continue
		}
		payload, err := json.Marshal(u.Presence)
		if err == nil {
			err = c.restorer.RestoreRetained(wire.PresenceTopic(u.UID), payload)
		}
		if err != nil {
			c.s.log.Debug("presence: retained copy not restored", "user", u.UID, "err", err)
		}
	}
}

func (c *clusterState) kickRefresh() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// run refreshes the member list whenever the cluster announces a change
// (or a failed send kicks it) until ctx ends, then stops the queues.
func (c *clusterState) run(ctx context.Context) {
	defer func() {
		c.bye()
		c.queues.Close()
		c.queues.Wait()
	}()
	var hellos sync.WaitGroup
	defer hellos.Wait()
	for {
		changed := c.c.MembersChanged() // before reading: no change is missed
		c.refreshMembers()
		c.mu.Lock()
		if !c.helloed && len(c.members) > 0 {
			c.helloed = true
			var round sync.WaitGroup
			for _, m := range c.members {
				if m.Name != c.self {
					round.Add(1)
					hellos.Go(func() { defer round.Done(); c.hello(ctx, m.Name) })
				}
			}
			// Then, once per run, the stored last seen of the users
			// no member retains (a restart of the whole cluster:
			// seen.go); not again when this node says hello again,
			// back from down.
			if !c.restoring {
				c.restoring = true
				hellos.Go(func() { round.Wait(); c.s.restoreStored(ctx) })
			}
		}
		c.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-c.kick:
		}
	}
}

// refreshMembers reloads the members; when they changed it moves the
// users whose home moved (see the top of this file).
func (c *clusterState) refreshMembers() {
	// Only names, addresses and who is down matter here: a change of
	// leader or lag is not a membership change.
	ms := c.c.Members()
	ms = slices.Clone(ms)
	for i, m := range ms {
		ms[i] = cluster.Member{Name: m.Name, Addr: m.Addr, Down: m.Down}
	}
	slices.SortFunc(ms, func(a, b cluster.Member) int {
		if a.Name < b.Name {
			return -1
		}
		if a.Name > b.Name {
			return 1
		}
		return 0
	})
	c.mu.Lock()
	defer c.mu.Unlock()
	if slices.Equal(ms, c.members) {
		return
	}
	old := c.members
	c.members = ms
	c.view.Store(&ms)
	sameHomes := len(old) == len(ms)
	for i := 0; sameHomes && i < len(ms); i++ {
		sameHomes = old[i].Name == ms[i].Name && old[i].Down == ms[i].Down
	}
	if sameHomes {
		return // only an address changed: homes are the same
	}
	c.s.log.Info("presence: cluster membership changed", "members", len(ms), "down", downNames(ms))
	back := isDown(old, c.self) && !isDown(ms, c.self)
	if back {
		// Back from down (cut off, or started and caught up): the
		// retained copies here may have missed changes meanwhile; hello
		// again: the users this node homes again adopt from the members'
		// copies, not from this node's.
		c.helloed = false
	}
	// Queues of nodes that left.
	c.queues.Retain(func(node string) bool { return c.addrLocked(node) != "" }, "not_member")
	// Their connections end with them: a node removed after a crash
	// sent no Disconnected (nor a Bye).
	left := map[string]bool{}
	for _, m := range old {
		if c.addrLocked(m.Name) == "" {
			left[m.Name] = true
		}
	}
	if len(left) > 0 {
		c.s.dropConns(func(key string) bool {
			node, _, _ := strings.Cut(key, "\x00")
			return left[node]
		})
	}
	// Re-announce this node's live connections to their users' new homes.
	for uid, conns := range c.local {
		if home(old, c.self, uid) == home(ms, c.self, uid) {
			continue
		}
		for id := range conns {
			c.routeLocked(c.againLocked(uid, id))
		}
	}
	// Forget the users this node no longer homes; adopt those it now does.
	c.s.forget(func(uid string) bool { return home(ms, c.self, uid) != c.self })
	if c.retained != nil && !back {
		c.retained.EachRetainedPresence(func(uid string, p wire.Presence) {
			if home(old, c.self, uid) != c.self && home(ms, c.self, uid) == c.self {
				c.s.adopt(uid, p)
			}
		})
	}
}

// isDown reports whether node is a member marked down in members.
func isDown(members []cluster.Member, node string) bool {
	for _, m := range members {
		if m.Name == node {
			return m.Down
		}
	}
	return false
}

// downNames are the members down, for logs.
func downNames(members []cluster.Member) []string {
	var out []string
	for _, m := range members {
		if m.Down {
			out = append(out, m.Name)
		}
	}
	return out
}

// forget drops, without publishing, the state of the users for which
// gone is true (their new home has it now).
func (s *Service) forget(gone func(uid string) bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for uid, u := range s.users {
		if gone(uid) {
			s.counts[u.status]--
			s.counts[wire.StatusOffline]++
			delete(s.users, uid)
		}
	}
	s.gOnline.Set(float64(s.counts[wire.StatusOnline]))
	s.gInactive.Set(float64(s.counts[wire.StatusInactive]))
}

// reannounced records connection connID of uid, announced again to
// this node as the user's new home (Event.Again): the connection was up
// all along, so the user's status does not change. A user this node
// knows nothing of yet takes the status the previous home retained
// (this node's copy, else hint, the sender's; the sender's when this
// node's says offline and the sender's does not: this node's missed the
// connection, it was down when it came); without one, the user is
// online as for a new connection. Both copies offline is an idle user
// (connected, no heartbeat for 5 intervals): they stay offline. A
// heartbeat the sender took (beat) later than the last this node knows
// counts as one taken then, if it is recent enough to keep the user
// online (less than 3 intervals ago): the user is online, last seen
// then, published when that changes the status.
func (s *Service) reannounced(uid, connID, hint string, beat time.Time) {
	retained := wire.Presence{Status: hint}
	if s.retained != nil {
		if p, ok := s.retained.RetainedPresence(uid); ok &&
			(p.Status != wire.StatusOffline || (hint != wire.StatusOnline && hint != wire.StatusInactive)) {
			retained = p
		}
	}
	switch retained.Status {
	case wire.StatusOnline, wire.StatusInactive, wire.StatusOffline:
	default:
		retained.Status = ""
	}
	now := s.clock.Now()
	s.mu.Lock()
	u, ok := s.users[uid]
	if !ok && retained.Status == "" {
		s.mu.Unlock()
		s.connected(uid, connID)
		return
	}
	if !ok {
		u = s.userLocked(uid)
		s.counts[u.status]--
		s.counts[retained.Status]++
		u.status = retained.Status
		u.lastSeen = now
		u.seen = seenBefore(retained, now)
		s.gOnline.Set(float64(s.counts[wire.StatusOnline]))
		s.gInactive.Set(float64(s.counts[wire.StatusInactive]))
	}
	if !slices.Contains(u.conns, connID) {
		u.conns = append(u.conns, connID)
	}
	u.graceUntil = time.Time{}
	if beat.After(now) {
		beat = now // the sender's clock is ahead
	}
	if !beat.IsZero() && now.Sub(beat) < inactiveAfter*s.interval && beat.After(u.shown()) {
		u.lastSeen, u.seen = beat, time.Time{}
		s.setLocked(uid, u, wire.StatusOnline)
	}
	s.scheduleLocked(uid, u)
	s.mu.Unlock()
	s.flush()
}

// seenBefore is when a user adopted with the retained status p was last
// seen, when p tells (zero: at the adoption). An inactive or offline
// status was published with the user's last connect or heartbeat (a
// later one would have made them online); an online one with when they
// came online, which says nothing of the heartbeats since.
func seenBefore(p wire.Presence, now time.Time) time.Time {
	if p.Status == wire.StatusOnline || p.LastSeen.IsZero() || p.LastSeen.After(now) {
		return time.Time{}
	}
	return p.LastSeen
}

// adopt takes over a user this node now homes from the retained status
// the previous home published: an online or inactive user stays so
// without a new publication, with a grace of one interval plus the grace
// period for its connections to be re-announced or a heartbeat to come.
// A user already known here (a re-announcement came first) is left as is.
func (s *Service) adopt(uid string, p wire.Presence) {
	if p.Status != wire.StatusOnline && p.Status != wire.StatusInactive {
		return
	}
	now := s.clock.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.users[uid]; ok {
		return
	}
	u := s.userLocked(uid)
	s.counts[u.status]--
	s.counts[p.Status]++
	u.status = p.Status
	u.lastSeen = now
	u.seen = seenBefore(p, now)
	u.graceUntil = now.Add(s.interval + s.grace)
	s.gOnline.Set(float64(s.counts[wire.StatusOnline]))
	s.gInactive.Set(float64(s.counts[wire.StatusInactive]))
	s.scheduleLocked(uid, u)
}
