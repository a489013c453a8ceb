// Package presence tracks user liveliness: heartbeats and new connections
// make a user online, missed heartbeats demote them to inactive and then
// offline, and a user whose last connection ended goes offline only after
// a grace period. A session takeover or a quick reconnect of the same
// client changes nothing: it never shows offline, nor an idle user online. Every status change (never a plain heartbeat) is published
// retained on presence/{uid}.
//
// Demotions run on a lazy timing wheel: a heartbeat only moves the user's
// lastSeen (O(1)); each tick visits just the users whose deadline came.
// On a single node the state machine sees every connection and heartbeat
// itself. In a cluster (Deps.Cluster) each user has a home node, the
// rendezvous hash of the user ID over the current members; every node
// forwards its events for the user to the home, where the one state
// machine for that user runs and publishes (see cluster.go).
package presence

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgechat/edgechat/internal/peerqueue"
	"github.com/edgechat/edgechat/internal/wire"
)

// Publisher publishes into the broker (implemented by the broker).
type Publisher interface {
	Publish(o wire.Outbound) error
}

// Clock is the time source; tests use a fake one so that timers are
// deterministic without sleeping.
type Clock interface {
	Now() time.Time
	NewTicker(d time.Duration) Ticker
}

// Ticker is the part of *time.Ticker the service uses.
type Ticker interface {
	C() <-chan time.Time
	Stop()
}

// Defaults.
const (
	DefaultInterval = 10 * time.Second
	DefaultGrace    = 5 * time.Second

	// Demotion thresholds, in heartbeat intervals (DESIGN.md item 8).
	inactiveAfter = 3
	offlineAfter  = 5
)

// Errors.
var (
	ErrConfig     = errors.New("presence: invalid config")
	ErrRunning    = errors.New("presence: already running")
	errNoUserInfo = errors.New("presence: no principal")
)

// Config tunes the timers. Zero values take the defaults.
type Config struct {
	Interval time.Duration // heartbeat interval; default 10s
	Grace    time.Duration // how long a user with no connection left stays up; default 5s
	// Tick is how often demotions are checked; default min(Interval, Grace)/5,
	// at least 10ms. It bounds how late a demotion can be published.
	Tick time.Duration

	// With Deps.Cluster: how many events may wait for one node (default
	// DefaultForwardQueue; more are dropped and counted).
	ForwardQueue int

	// With Deps.Store: how often the last seen of the users online or
	// inactive is written (default DefaultSeenEvery); a user going
	// offline is written at once (see seen.go).
	SeenEvery time.Duration

	// Region is this cluster's region name (docs/regions.md): GET
	// /presence/name@{Region} is the local user name. Empty: no name is
	// qualified with this region.
	Region string
}

// Deps are the collaborators. Publisher is required.
type Deps struct {
	Publisher  Publisher
	Social     Social // the facts of the visibility rule (see CanSeePresence); zero: a user sees only their own presence (admins see all)
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	Clock      Clock // nil: real time

	// Cluster makes the service one of a cluster's: each user's state
	// machine runs on the user's home node (see cluster.go). Nil: a
	// single node. Retained (optional) is this node's store of retained
	// messages, read for its copies of presence/{uid}: the fallback of
	// Status and what a new home adopts.
	Cluster  Cluster
	Retained RetainedStore

	// ReadBarrier (optional) waits until this node has applied what the
	// cluster committed before the call (cluster.Raft.ReadBarrier): GET
	// /presence/{uid} refuses only after it, since a contact, a group or
	// a block lifted through another node a moment ago changes the
	// answer. Nil: a single node, refusals stand at once.
	ReadBarrier func(ctx context.Context) error

	// Store (optional) keeps users' last seen in the replicated state,
	// across restarts of the whole cluster (see seen.go). Zero: in
	// memory only.
	Store Store
}

// user is the state of one tracked user. Users that are offline with no
// connection are dropped from the map (only their lastSeen is kept, in
// Service.gone), so the tick never visits them.
type user struct {
	status   string
	lastSeen time.Time // last connect or heartbeat (monotonic reading kept)
	// seen, when not zero, is the lastSeen shown instead of lastSeen: a
	// user adopted from the previous home's retained status (inactive or
	// offline) was last seen then, not at the adoption, which only
	// starts the timers. The next connect or heartbeat clears it.
	seen       time.Time
	conns      []string  // connection IDs on this node; usually 1-3, so a slice beats a map
	graceUntil time.Time // non-zero while the last connection is gone and the grace runs
	// left are the clients whose connections ended less than a grace
	// ago: a connection of one of them is a reconnect (see connected).
	left   []leftClient
	slot   int64 // wheel slot the user is due in; 0 = not scheduled
	stored int64 // the last seen (Unix seconds) last queued for the store (seen.go)
}

// leftClient is a client whose connection ended; until the end of the
// grace its next connection is a reconnect.
type leftClient struct {
	client string
	until  time.Time
}

type event struct {
	uid string
	p   wire.Presence
}

// Service is the presence state machine.
type Service struct {
	interval, grace, period time.Duration
	region                  string // this region's name: name@region is the local user
	pub                     Publisher
	retained                Retained         // nil: no store of retained presence
	dropper                 RetainedDropper  // nil: an erased account's retained copy stays (in memory)
	restorer                RetainedRestorer // nil: stored last seen is not retained at start
	social                  Social
	barrier                 func(ctx context.Context) error // nil: refusals stand at once
	log                     *slog.Logger
	clock                   Clock
	running                 atomic.Bool

	mu     sync.Mutex
	users  map[string]*user
	gone   map[string]int64 // lastSeen (Unix seconds) of dropped (offline, unconnected) users
	counts map[string]int   // tracked users per status
	// wheel is a lazy timing wheel: slot → users to re-check then. A
	// heartbeat only moves lastSeen (O(1)); a user is re-checked at its
	// scheduled slot and rescheduled there if it turns out not to be due,
	// so a tick visits only the users whose deadline came, not everyone.
	// Entries whose user was rescheduled or dropped are skipped (u.slot
	// tells the live one).
	wheel    map[int64][]string
	epoch    time.Time // slot n covers (epoch+(n-1)·period, epoch+n·period]
	lastSlot int64     // highest slot processed
	pending  []event   // changes waiting to be published, in order
	flushing bool      // one goroutine publishes at a time, keeping order

	mUsers       *prometheus.GaugeVec
	gOnline      prometheus.Gauge
	gInactive    prometheus.Gauge
	mTransitions *prometheus.CounterVec
	mPubErrors   prometheus.Counter

	cl   *clusterState // nil on a single node
	seen *seenState    // nil: last seen in memory only
}

// New validates cfg and builds the service; Run starts its timers.
func New(cfg Config, deps Deps) (*Service, error) {
	if cfg.Interval == 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Grace == 0 {
		cfg.Grace = DefaultGrace
	}
	if cfg.Interval < 0 || cfg.Grace < 0 || cfg.Tick < 0 {
		return nil, fmt.Errorf("%w: negative duration (interval %v, grace %v, tick %v)", ErrConfig, cfg.Interval, cfg.Grace, cfg.Tick)
	}
	if cfg.Tick == 0 {
		cfg.Tick = min(cfg.Interval, cfg.Grace) / 5
		cfg.Tick = max(cfg.Tick, 10*time.Millisecond)
	}
	if deps.Publisher == nil {
		return nil, fmt.Errorf("%w: no publisher", ErrConfig)
	}
	s := &Service{
		interval: cfg.Interval,
		region:   cfg.Region,
		grace:    cfg.Grace,
		period:   cfg.Tick,
		pub:      deps.Publisher,
		retained: retainedPresence(deps.Retained),
		social:   deps.Social,
		barrier:  deps.ReadBarrier,
		log:      deps.Logger,
		clock:    deps.Clock,
		users:    make(map[string]*user),
		gone:     make(map[string]int64),
		counts:   make(map[string]int),
		wheel:    make(map[int64][]string),
		mUsers: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "edgechat_presence_users",
			Help: "Users tracked by this node's presence service, by status (online, inactive).",
		}, []string{"status"}),
		mTransitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgechat_presence_transitions_total",
			Help: "Presence status changes, by new status.",
		}, []string{"to"}),
		mPubErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgechat_presence_publish_errors_total",
			Help: "Presence updates the broker refused.",
		}),
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.dropper, _ = deps.Retained.(RetainedDropper)
	s.restorer, _ = deps.Retained.(RetainedRestorer)
	if s.clock == nil {
		s.clock = realClock{}
	}
	s.epoch = s.clock.Now()
	s.gOnline = s.mUsers.WithLabelValues(wire.StatusOnline)
	s.gInactive = s.mUsers.WithLabelValues(wire.StatusInactive)
	for _, st := range []string{wire.StatusOnline, wire.StatusInactive, wire.StatusOffline} {
		s.mTransitions.WithLabelValues(st)
	}
	if r := deps.Registerer; r != nil {
		for _, c := range []prometheus.Collector{s.mUsers, s.mTransitions, s.mPubErrors} {
			if err := r.Register(c); err != nil {
				return nil, fmt.Errorf("presence: registering metrics: %w", err)
			}
		}
	}
	if cfg.ForwardQueue < 0 {
		return nil, fmt.Errorf("%w: negative forward queue %d", ErrConfig, cfg.ForwardQueue)
	}
	if deps.Store.DB != nil {
		seen, err := newSeenState(deps.Store, cfg.SeenEvery)
		if err != nil {
			return nil, err
		}
		s.seen = seen
		if r := deps.Registerer; r != nil {
			for _, c := range []prometheus.Collector{s.seen.mFailed, s.seen.mWritten} {
				if err := r.Register(c); err != nil {
					return nil, fmt.Errorf("presence: registering metrics: %w", err)
				}
			}
		}
		deps.Store.FSM.Register(wire.CmdPresenceSeen, s.applySeen)
	}
	if deps.Cluster != nil {
		if cfg.ForwardQueue == 0 {
			cfg.ForwardQueue = DefaultForwardQueue
		}
		// edgechat_presence_forward_{queued,sent,batches,retries,dropped}_total, _pending by peer.
		m, err := peerqueue.NewMetrics(deps.Registerer, "edgechat_presence_forward", "Presence events sent to the users' home nodes")
		if err != nil {
			return nil, fmt.Errorf("presence: %w", err)
		}
		restorer, _ := deps.Retained.(RetainedRestorer)
		if err := attachClusterState(s, deps.Cluster, retainedPresence(deps.Retained), restorer, cfg.ForwardQueue, m); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Run checks the demotion timers until ctx is done. It returns nil on a
// normal shutdown; the ticker is stopped on return.
func (s *Service) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	defer s.running.Store(false)
	if s.seen != nil {
		done := make(chan struct{})
		sctx, cancel := context.WithCancel(ctx)
		go func() { defer close(done); s.runSeen(sctx) }()
		defer func() { cancel(); <-done }()
	}
	if s.cl != nil {
		done := make(chan struct{})
		cctx, cancel := context.WithCancel(ctx)
		go func() { defer close(done); s.cl.run(cctx) }()
		defer func() { cancel(); <-done }()
	}
	t := s.clock.NewTicker(s.period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C():
			s.tick()
		}
	}
}

// tick applies the demotions that are due now. It visits only the users
// scheduled in the wheel slots that came due since the last tick.
func (s *Service) tick() {
	now := s.clock.Now()
	s.mu.Lock()
	cur := s.slotAt(now, false)
	for slot := s.lastSlot + 1; slot <= cur; slot++ {
		uids, ok := s.wheel[slot]
		if !ok {
			continue
		}
		delete(s.wheel, slot)
		for _, uid := range uids {
			if u, ok := s.users[uid]; ok && u.slot == slot {
				u.slot = 0
				s.checkLocked(uid, u, now)
			}
		}
	}
	s.lastSlot = max(s.lastSlot, cur)
	s.mu.Unlock()
	s.flush()
}

// checkLocked applies the demotions due at now to u, then schedules its
// next check or drops it.
func (s *Service) checkLocked(uid string, u *user, now time.Time) {
	if len(u.conns) == 0 && !u.graceUntil.IsZero() && !now.Before(u.graceUntil) {
		// The grace ran out with no connection back: offline now.
		u.graceUntil = time.Time{}
		s.setLocked(uid, u, wire.StatusOffline)
	} else if u.status != wire.StatusOffline {
		idle := now.Sub(u.lastSeen)
		switch {
		case idle >= offlineAfter*s.interval:
			s.setLocked(uid, u, wire.StatusOffline)
		case idle >= inactiveAfter*s.interval && u.status == wire.StatusOnline:
			s.setLocked(uid, u, wire.StatusInactive)
		}
	}
	if u.status == wire.StatusOffline && len(u.conns) == 0 && u.graceUntil.IsZero() {
		s.dropLocked(uid, u)
		return
	}
	s.scheduleLocked(uid, u)
}

// nextDeadline is when u may next change without a call into the
// service; zero when only a call can change it (offline, connected).
func (s *Service) nextDeadline(u *user) time.Time {
	var d time.Time
	switch u.status {
	case wire.StatusOnline:
		d = u.lastSeen.Add(inactiveAfter * s.interval)
	case wire.StatusInactive:
		d = u.lastSeen.Add(offlineAfter * s.interval)
	}
	if !u.graceUntil.IsZero() && (d.IsZero() || u.graceUntil.Before(d)) {
		d = u.graceUntil
	}
	return d
}

// scheduleLocked makes sure u is checked no later than its next
// deadline. A user already scheduled at or before that slot is left
// alone: that early check reschedules it (which keeps Heartbeat O(1)).
func (s *Service) scheduleLocked(uid string, u *user) {
	d := s.nextDeadline(u)
	if d.IsZero() {
		return
	}
	slot := max(s.slotAt(d, true), s.lastSlot+1)
	if u.slot != 0 && u.slot <= slot {
		return
	}
	u.slot = slot
	s.wheel[slot] = append(s.wheel[slot], uid)
}

// slotAt is the wheel slot of t: the first slot whose tick is at or after
// t when up, else the last slot whose tick is at or before t.
func (s *Service) slotAt(t time.Time, up bool) int64 {
	d := t.Sub(s.epoch)
	n := int64(d / s.period)
	if up && d%s.period != 0 {
		n++
	}
	return n
}

// connected records that connection connID of uid is up; the user is
// online from now, and a pending grace (a takeover or quick reconnect)
// is cancelled. A repeated connID is counted once.
//
// A reconnect changes nothing but the connections: a connection of a
// client that has another live connection (a takeover whose old
// connection has not ended yet) or whose connection ended less than a
// grace ago (a quick reconnect, a takeover seen in the other order, a
// client moved to another node) is the device's connection going on, so
// an inactive user stays inactive and the timers keep running from the
// last heartbeat (an idle user stays inactive or offline). Only a
// heartbeat or another client's connection shows the user active.
func (s *Service) connected(uid, connID string) {
	now := s.clock.Now()
	s.mu.Lock()
	u := s.userLocked(uid)
	found, again := false, false
	client := clientOf(connID)
	for _, c := range u.conns {
		if c == connID {
			found = true
		} else if clientOf(c) == client {
			again = true
		}
	}
	u.pruneLeft(now)
	for _, l := range u.left {
		again = again || l.client == client
	}
	if !found {
		u.conns = append(u.conns, connID)
	}
	u.graceUntil = time.Time{}
	if !again {
		u.lastSeen, u.seen = now, time.Time{}
		s.setLocked(uid, u, wire.StatusOnline)
	}
	s.scheduleLocked(uid, u)
	s.mu.Unlock()
	s.flush()
}

// clientOf is the MQTT client ID of a connection ID: the broker's are
// {clientID}#{generation}, and a cluster's home prefixes them with the
// node and its run (connKey). MQTT strings hold no NUL.
func clientOf(connID string) string {
	if i := strings.LastIndexByte(connID, 0); i >= 0 {
		connID = connID[i+1:]
	}
	if i := strings.LastIndexByte(connID, '#'); i >= 0 {
		connID = connID[:i]
	}
	return connID
}

// ended records that connection connID of u ended now: its client's
// next connection within the grace is a reconnect.
func (s *Service) endedLocked(u *user, connID string, now time.Time) {
	u.pruneLeft(now)
	u.left = append(u.left, leftClient{client: clientOf(connID), until: now.Add(s.grace)})
}

// pruneLeft forgets the clients whose grace has run out.
func (u *user) pruneLeft(now time.Time) {
	kept := u.left[:0]
	for _, l := range u.left {
		if now.Before(l.until) {
			kept = append(kept, l)
		}
	}
	clear(u.left[len(kept):])
	u.left = kept
}

// disconnected records that connection connID of uid ended (the moment
// its MQTT will would fire). When it was the user's last connection the
// grace period starts; offline is published only if no connection comes
// back before it ends. Unknown connections are ignored, so a late
// Disconnected of a taken-over session changes nothing.
func (s *Service) disconnected(uid, connID string) {
	now := s.clock.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	u, ok := s.users[uid]
	if !ok {
		return
	}
	i := -1
	for j, c := range u.conns {
		if c == connID {
			i = j
			break
		}
	}
	if i < 0 {
		return
	}
	s.endedLocked(u, connID, now)
	u.conns[i] = u.conns[len(u.conns)-1]
	u.conns[len(u.conns)-1] = ""
	u.conns = u.conns[:len(u.conns)-1]
	if len(u.conns) == 0 {
		s.unconnectedLocked(uid, u, now)
	}
}

// unconnectedLocked: u's last connection is gone. The grace period
// starts; an offline (idle) user is forgotten once it ends (until then a
// connection of the same client is a reconnect, which keeps them
// offline: see connected).
func (s *Service) unconnectedLocked(uid string, u *user, now time.Time) {
	u.conns = nil
	u.graceUntil = now.Add(s.grace)
	s.scheduleLocked(uid, u)
}

// dropConns ends, as disconnected does, every connection whose ID gone
// picks (those of an earlier run of a node that restarted: it sent no
// Disconnected for them).
func (s *Service) dropConns(gone func(connID string) bool) {
	now := s.clock.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for uid, u := range s.users {
		kept := u.conns[:0]
		for _, c := range u.conns {
			if !gone(c) {
				kept = append(kept, c)
			} else {
				s.endedLocked(u, c, now)
			}
		}
		if len(kept) == len(u.conns) {
			continue
		}
		clear(u.conns[len(kept):])
		u.conns = kept
		if len(kept) == 0 {
			s.unconnectedLocked(uid, u, now)
		}
	}
}

// heartbeat marks uid as seen now (MQTT presence/{uid}/heartbeat or
// POST /presence/heartbeat). It is O(1) and publishes only when the
// status changes. A heartbeat after the last connection ended (an HTTP
// client) cancels the grace: from then on the heartbeat timers decide.
func (s *Service) heartbeat(uid string) {
	now := s.clock.Now()
	s.mu.Lock()
	u := s.userLocked(uid)
	u.lastSeen, u.seen = now, time.Time{}
	u.graceUntil = time.Time{}
	s.setLocked(uid, u, wire.StatusOnline)
	s.scheduleLocked(uid, u)
	s.mu.Unlock()
	s.flush()
}

// status is uid's presence as this node's state machine knows it; an
// untracked user is offline, last seen at the later of the lastSeen
// this node kept and the one of the retained presence/{uid} (zero when
// neither has one). The retained copy counts because this node's own
// record may be missing or old: a home that restarted knows nothing of
// the users who went offline before (its broker took their retained
// copies back from the other nodes), and a node that homes a user again
// after a membership change kept the lastSeen of its earlier turn.
//
// With a Store the last seen the replicated state keeps counts too: after
// a restart of the whole cluster it is all that is left.
func (s *Service) status(uid string) wire.Presence {
	var retained time.Time
	if s.retained != nil {
		if p, ok := s.retained.RetainedPresence(uid); ok {
			retained = publicTime(p.LastSeen)
		}
	}
	s.mu.Lock()
	if u, ok := s.users[uid]; ok {
		defer s.mu.Unlock()
		return wire.Presence{Status: u.status, LastSeen: publicTime(u.shown())}
	}
	seen := goneTime(s.gone[uid])
	s.mu.Unlock()
	if stored := s.storedSeen(uid); stored.After(seen) {
		seen = stored
	}
	if retained.After(seen) {
		seen = retained
	}
	return wire.Presence{Status: wire.StatusOffline, LastSeen: seen}
}

// userLocked returns uid's state, creating it (offline) when untracked.
func (s *Service) userLocked(uid string) *user {
	u, ok := s.users[uid]
	if !ok {
		u = &user{status: wire.StatusOffline, lastSeen: goneTime(s.gone[uid])}
		delete(s.gone, uid)
		s.users[uid] = u
	}
	return u
}

func (s *Service) dropLocked(uid string, u *user) {
	s.queueSeenLocked(uid, u, true)
	delete(s.users, uid)
	if t := u.shown(); !t.IsZero() {
		s.gone[uid] = t.Unix()
	}
}

// shown is the lastSeen u's status shows.
func (u *user) shown() time.Time {
	if !u.seen.IsZero() {
		return u.seen
	}
	return u.lastSeen
}

// setLocked moves u to status and queues the publication when it changed.
func (s *Service) setLocked(uid string, u *user, status string) {
	if u.status == status {
		return
	}
	s.counts[u.status]--
	s.counts[status]++
	u.status = status
	s.gOnline.Set(float64(s.counts[wire.StatusOnline]))
	s.gInactive.Set(float64(s.counts[wire.StatusInactive]))
	s.mTransitions.WithLabelValues(status).Inc()
	if status == wire.StatusOffline {
		s.queueSeenLocked(uid, u, true) // written now, in the background
	}
	s.pending = append(s.pending, event{uid: uid, p: wire.Presence{Status: status, LastSeen: publicTime(u.shown())}})
}

// flush publishes the queued changes outside s.mu. Only one goroutine
// publishes at a time and it drains the queue in order, so the retained
// presence/{uid} always ends on the latest status even when callers race.
func (s *Service) flush() {
	s.mu.Lock()
	if s.flushing || len(s.pending) == 0 {
		s.mu.Unlock()
		return
	}
	s.flushing = true
	for {
		batch := s.pending
		s.pending = nil
		if len(batch) == 0 {
			s.flushing = false
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
		for _, e := range batch {
			s.publish(e)
		}
		s.mu.Lock()
	}
}

func (s *Service) publish(e event) {
	payload, err := json.Marshal(e.p)
	if err != nil { // cannot happen for this struct; keep the error path honest
		s.log.Error("presence: encoding", "user", e.uid, "err", err)
		return
	}
	err = s.pub.Publish(wire.Outbound{Topic: wire.PresenceTopic(e.uid), Payload: payload, Retain: true, QoS: 1})
	if err != nil {
		s.mPubErrors.Inc()
		s.log.Warn("presence: publish failed", "user", e.uid, "status", e.p.Status, "err", err)
	}
}

// publicTime is the form lastSeen travels in: UTC, whole seconds, no
// monotonic reading (so it compares equal after a JSON round trip).
func publicTime(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return t.UTC().Truncate(time.Second)
}

func goneTime(sec int64) time.Time {
	if sec == 0 {
		return time.Time{}
	}
	return time.Unix(sec, 0).UTC()
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }
func (realClock) NewTicker(d time.Duration) Ticker {
	return realTicker{time.NewTicker(d)}
}

type realTicker struct{ t *time.Ticker }

func (r realTicker) C() <-chan time.Time { return r.t.C }
func (r realTicker) Stop()               { r.t.Stop() }

var (
	_ Clock  = realClock{}
	_ Ticker = realTicker{}
)
