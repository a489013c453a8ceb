package push

// The sender: the part of the push bridge that turns committed messages
// into notifications, exactly once per (message, device) as far as a
// crash allows.
//
// Every committed message that may need a push sits in the replicated
// outbox (services/push): the archive stages it in the transaction that
// stores it. The Raft leader is the one node that sends: it is the node
// the whole cluster agrees on at any time, and it moves within about a
// second when a node dies (a home node per user, as presence has, would
// stay on a killed node until it is removed from the cluster). On
// becoming leader the sender waits for a Raft barrier (so that it knows
// every progress record the old leader committed) and reads the outbox;
// while it leads it hears of each newly staged message right after its
// commit. For each message it
//
//  1. plans at once (at commit, when it is leader then): the candidate
//     recipients (Candidates), their registered devices not yet handled,
//     and which of those devices are connected now (a device online at
//     commit gets the message over MQTT and is not pushed);
//  2. when the grace period after the commit has passed, reads the
//     user's registrations again (a device gone since the plan is not
//     pushed; one with a new token is pushed there), decides for each
//     device (Decide, with the device's connection, the user's read
//     cursor, mutes and do-not-disturb read then) and queues a
//     notification (Build) for each device to push;
//  3. sends through one bounded queue per provider (a peerqueue: the
//     newest pushes are kept when it overflows; the pushes waiting for a
//     retry count against the same bound), many requests at once,
//     retrying a transient failure with exponential backoff and jitter,
//     never before the provider's Retry-After, deciding each retry again
//     as in 2 before it is sent, and removing a token the provider
//     reports dead;
//  4. records its progress in the outbox through Raft, coalesced: each
//     device handled (pushed, held back, given up or dead), and the
//     message done once every device is. A new leader skips the handled
//     devices (one held back is never pushed later), so only
//     pushes whose record was not yet committed when the leader died are
//     sent again, and the per-conversation collapse ID makes that second
//     notification replace the first on the device.

import (
	"cmp"
	"container/heap"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgechat/edgechat/internal/peerqueue"
	"github.com/edgechat/edgechat/internal/snowflake"
	"github.com/edgechat/edgechat/internal/wire"
)

// Defaults of SenderConfig.
const (
	DefaultGrace          = 5 * time.Second
	DefaultConcurrency    = 128
	DefaultMaxQueue       = 100_000
	DefaultMaxAttempts    = 10
	DefaultRetryMin       = time.Second
	DefaultRetryMax       = 5 * time.Minute
	DefaultSendTimeout    = 10 * time.Second
	DefaultProgressEvery  = 100 * time.Millisecond
	maxProgressPerCommand = 10_000 // services/push accepts 20,000
	planWorkers           = 4
	// executeWorkers decide the due messages (execute): a fixed few, so
	// that messages coming due faster than they are decided (a slow
	// read, a backlog at a new leader) wait in the schedule, not in a
	// goroutine each.
	executeWorkers = 4 * planWorkers
	replanDelay    = 5 * time.Second
	// queuedRecheck: a push that waited longer than this in its queue
	// since it was decided (a slow provider, a long queue) is decided
	// again before its first attempt, as a retry is.
	queuedRecheck     = time.Second
	barrierRetry      = 100 * time.Millisecond
	finalFlushTimeout = 3 * time.Second
)

// SenderConfig tunes the sender; zero fields take the defaults, except
// Grace, where NoGrace asks for none.
type SenderConfig struct {
	// Grace is how long after the commit a device is pushed if it has not
	// connected or read the message (--push-grace).
	Grace time.Duration
	// NoGrace pushes as soon as the message is committed (Grace 0 would
	// mean the default).
	NoGrace bool
	// GroupLimit is --push-group-limit (DefaultGroupLimit).
	GroupLimit int
	// Concurrency is the provider requests in flight per platform.
	Concurrency int
	// MaxQueue bounds the pushes waiting per platform, queued or waiting
	// for a retry; past it the oldest are given up (counted as overflow).
	MaxQueue int
	// MaxAttempts is how many times a push is tried before it is given up.
	MaxAttempts int
	// RetryMin and RetryMax bound the delay between attempts (before
	// jitter and the provider's Retry-After).
	RetryMin, RetryMax time.Duration
	// SendTimeout bounds one provider request.
	SendTimeout time.Duration
	// ProgressEvery is how often progress is committed.
	ProgressEvery time.Duration
	// AckTimeout is how long the node holding a device's connection waits
	// for the device to acknowledge a QoS 1 delivery before it reports it
	// unacknowledged (--push-ack-timeout; SenderDeps.Unacked). With it, a
	// device connected at the commit or at the end of the grace period is
	// decided once it is reported, or ackSlack after AckTimeout: pushed as
	// if offline when reported, held back as connected otherwise. Zero:
	// a connected device is held back at once, whether it acknowledged or
	// not.
	AckTimeout time.Duration
}

// ackSlack is how long after AckTimeout (counted from the commit) the
// sender waits for a report of an unacknowledged delivery: the delivery
// and the report's commit take that long at most in a healthy cluster.
const ackSlack = 3 * time.Second

func (c SenderConfig) withDefaults() SenderConfig {
	if c.Grace <= 0 && !c.NoGrace {
		c.Grace = DefaultGrace
	}
	if c.NoGrace {
		c.Grace = 0
	}
	c.GroupLimit = effectiveGroupLimit(c.GroupLimit)
	c.Concurrency = cmp.Or(max(c.Concurrency, 0), DefaultConcurrency)
	c.MaxQueue = cmp.Or(max(c.MaxQueue, 0), DefaultMaxQueue)
	c.MaxAttempts = cmp.Or(max(c.MaxAttempts, 0), DefaultMaxAttempts)
	c.RetryMin = cmp.Or(max(c.RetryMin, 0), DefaultRetryMin)
	c.RetryMax = cmp.Or(max(c.RetryMax, 0), DefaultRetryMax)
	c.SendTimeout = cmp.Or(max(c.SendTimeout, 0), DefaultSendTimeout)
	c.ProgressEvery = cmp.Or(max(c.ProgressEvery, 0), DefaultProgressEvery)
	return c
}

// Progress is what the sender commits to the outbox: per message the
// client IDs ({uid}/{device}) handled, and the messages done.
type Progress struct {
	Handled map[snowflake.ID][]string
	Done    []snowflake.ID
}

// Outbox is the replicated list of messages with pushes to decide
// (services/push, adapted by the node).
type Outbox interface {
	// EachQueued calls fn with each queued message ID, oldest first, until
	// it returns false.
	EachQueued(fn func(id snowflake.ID) bool) error
	// Handled lists the client IDs recorded as handled for id.
	Handled(id snowflake.ID) ([]string, error)
	// RecordProgress commits p (through Raft).
	RecordProgress(ctx context.Context, p Progress) error
}

// Preferences are a user's push settings (services/push).
type Preferences interface {
	// Mutes are uid's mutes in force at `at`.
	Mutes(uid string, at time.Time) ([]Mute, error)
	// DND is uid's do-not-disturb window, nil when none.
	DND(uid string) (*DND, error)
	Preview(uid string) (Preview, error)
	// GroupOptIns are the users who asked for every message of gid.
	GroupOptIns(gid string) ([]string, error)
}

// Archive is where the sender reads messages and read state
// (services/archive).
type Archive interface {
	// Message is the stored envelope JSON of id (a message the outbox
	// staged).
	Message(id snowflake.ID) (payload []byte, ok bool, err error)
	// MessageIn is the stored envelope JSON of id in the direct
	// conversation between a and b, or in group gid when set (any
	// message: a reply's original need not have been staged).
	MessageIn(id snowflake.ID, a, b, gid string) (payload []byte, ok bool, err error)
	// ReadUpTo is uid's read cursor with peer, or in group gid when set.
	ReadUpTo(uid, peer, gid string) (snowflake.ID, error)
	// LateUnread: a message below that cursor still counts as unread
	// (stored after the cursor last moved: a clock behind, another
	// region).
	LateUnread(uid, peer, gid string) (bool, error)
	// UnreadTotal is uid's unread count over all conversations.
	UnreadTotal(uid string) (int, error)
}

// Directory names users and groups (services/users).
type Directory interface {
	DisplayName(uid string) string
	// Group is a group's display name and member IDs; an error wrapping
	// wire.ErrNotFound when there is no such group (any more).
	Group(gid string) (name string, members []string, err error)
	IsMember(gid, uid string) bool
}

// Blocks tells whether a user blocked another (services/users): a
// message of someone the recipient blocked is never pushed.
type Blocks interface {
	IsBlocked(blocker, blocked string) bool
}

// SignedIn tells whether a registered device is still signed in
// (services/auth): a registration whose session ended, and that no live
// session of the user names, is not pushed.
type SignedIn interface {
	DeviceSignedIn(uid, device, session string) (bool, error)
}

// Connections tells whether an MQTT client ID is connected anywhere in
// the cluster (the broker's replicated client registry).
type Connections interface {
	Connected(clientID string) bool
}

// Unacked tells whether a connected device was reported not to have
// acknowledged a message's delivery (services/push, CmdPushUnacked).
type Unacked interface {
	Unacked(id snowflake.ID, clientID string) (bool, error)
}

// Leadership says whether this node sends (*cluster.Raft).
type Leadership interface {
	IsLeader() bool
	// Barrier returns once every entry committed before it is applied
	// here (a new leader may not yet know the last progress records).
	Barrier(ctx context.Context) error
	// MembersChanged is closed at the next change of members or leader.
	MembersChanged() <-chan struct{}
}

// SenderDeps are the sender's collaborators; all but Blocks (nil: nobody
// blocked anyone), SignedIn (nil: every registration is signed in),
// Metrics, Registerer, Now and Logger are required.
type SenderDeps struct {
	Outbox        Outbox
	Registrations Registrations
	Preferences   Preferences
	Archive       Archive
	Directory     Directory
	Blocks        Blocks
	SignedIn      SignedIn
	Connections   Connections
	// Unacked, with SenderConfig.AckTimeout, has connected devices that
	// did not acknowledge a message pushed as if offline; nil: never.
	Unacked    Unacked
	Leadership Leadership
	Provider   Provider // the Router, usually Counted
	Metrics    *Metrics
	Registerer prometheus.Registerer
	Now        func() time.Time
	Logger     *slog.Logger
}

// Sender sends the pushes of committed messages while its node leads.
type Sender struct {
	cfg  SenderConfig
	deps SenderDeps
	log  *slog.Logger
	now  func() time.Time
	sm   *senderMetrics
	qm   *peerqueue.Metrics

	mu     sync.Mutex
	staged []snowflake.ID // heard of since the last drain
	wake   chan struct{}
	cur    *term // the term while this node leads
}

// NewSender checks deps and registers the sender's metrics.
func NewSender(cfg SenderConfig, deps SenderDeps) (*Sender, error) {
	if deps.Outbox == nil || deps.Registrations == nil || deps.Preferences == nil || deps.Archive == nil ||
		deps.Directory == nil || deps.Connections == nil || deps.Leadership == nil || deps.Provider == nil {
		return nil, errors.New("push: SenderDeps: Outbox, Registrations, Preferences, Archive, Directory, Connections, Leadership and Provider are required")
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	s := &Sender{cfg: cfg.withDefaults(), deps: deps, log: orDiscard(deps.Logger).With("component", "push-sender"),
		now: deps.Now, wake: make(chan struct{}, 1)}
	var err error
	if s.sm, err = newSenderMetrics(deps.Registerer); err != nil {
		return nil, err
	}
	if s.qm, err = peerqueue.NewMetrics(deps.Registerer, "edgechat_push_queue", "Push notifications"); err != nil {
		return nil, fmt.Errorf("push: queue metrics: %w", err)
	}
	return s, nil
}

// Staged tells the sender that message id entered the outbox (called by
// the outbox after the commit, on the FSM's goroutine: it only notes
// the ID).
func (s *Sender) Staged(id snowflake.ID) {
	s.mu.Lock()
	s.staged = append(s.staged, id)
	s.mu.Unlock()
	s.poke()
}

// Unacked tells the sender that an unacknowledged delivery of message id
// was recorded (called on the FSM's goroutine after the commit): a
// device of it waiting for its acknowledgement is decided now.
func (s *Sender) Unacked(id snowflake.ID) {
	s.mu.Lock()
	t := s.cur
	s.mu.Unlock()
	if t == nil {
		return
	}
	t.mu.Lock()
	m := t.known[id]
	t.mu.Unlock()
	if m != nil {
		t.acks.wakeUp(m)
	}
}

// acks reports whether connected devices wait for their acknowledgement.
func (s *Sender) acks() bool { return s.cfg.AckTimeout > 0 && s.deps.Unacked != nil }

// poke wakes the leading loop (to look at the schedule again).
func (s *Sender) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *Sender) drainStaged() []snowflake.ID {
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := s.staged
	s.staged = nil
	return ids
}

// Run sends while this node leads, until ctx ends.
func (s *Sender) Run(ctx context.Context) error {
	for {
		changed := s.deps.Leadership.MembersChanged()
		if s.deps.Leadership.IsLeader() {
			if err := s.deps.Leadership.Barrier(ctx); err != nil {
				// Not the leader after all, or no quorum: look again soon.
				s.log.Debug("push sender: barrier before leading failed", "err", err)
				select {
				case <-time.After(barrierRetry):
				case <-ctx.Done():
				}
			} else {
				s.lead(ctx)
			}
		} else {
			s.drainStaged() // the outbox has them; a leader scans it
			select {
			case <-changed:
			case <-s.wake:
			case <-ctx.Done():
			}
		}
		if ctx.Err() != nil {
			return nil
		}
	}
}

// term is the sender's state while it leads: dropped when it stops.
type term struct {
	s       *Sender
	ctx     context.Context
	queues  *peerqueue.Set[*job]
	retries *retryWait
	acks    *ackWait
	prog    *progress
	wg      sync.WaitGroup // planners, executors, the retry, ack and progress loops

	mu       sync.Mutex
	known    map[snowflake.ID]*message // scheduled or in progress
	schedule dueHeap                   // waiting for their grace's end (or to be planned again)
	ready    []*message                // due, waiting for an executor, in due order
	planning chan *message
	// readyWake wakes an executor (each that takes a message wakes the
	// next while more wait).
	readyWake chan struct{}
}

// lead runs one leadership term: it returns when this node no longer
// leads or ctx ends, after stopping every send of the term and trying to
// commit its last progress.
func (s *Sender) lead(ctx context.Context) {
	tctx, cancel := context.WithCancel(ctx)
	t := &term{s: s, ctx: tctx, prog: newProgress(), known: map[snowflake.ID]*message{},
		planning: make(chan *message, 1024), readyWake: make(chan struct{}, 1)}
	t.queues = peerqueue.NewSet(t.sendBatch, peerqueue.Config[*job]{
		MaxItems: s.cfg.MaxQueue, MaxBatch: s.cfg.Concurrency, DropOldest: true, Dropped: t.overflowed,
		Timeout: s.cfg.SendTimeout + 5*time.Second, Metrics: s.qm, Logger: s.log})
	t.retries = newRetryWait(t)
	t.acks = newAckWait(t)
	s.log.Info("push sender leading")
	s.mu.Lock()
	s.cur = t
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.cur = nil
		s.mu.Unlock()
		cancel()
		t.queues.Close()
		t.wg.Wait()
		fctx, fcancel := context.WithTimeout(context.WithoutCancel(ctx), finalFlushTimeout)
		t.flush(fctx)
		fcancel()
		s.log.Info("push sender stopped leading")
	}()
	for range planWorkers {
		t.wg.Go(t.planLoop)
	}
	for range executeWorkers {
		t.wg.Go(t.executeLoop)
	}
	t.wg.Go(t.progressLoop)
	t.wg.Go(t.retries.run)
	if s.acks() {
		t.wg.Go(t.acks.run)
		for range planWorkers {
			t.wg.Go(t.acks.worker)
		}
	}
	for _, id := range s.drainStaged() {
		t.add(id, true)
	}
	if err := s.deps.Outbox.EachQueued(func(id snowflake.ID) bool { t.add(id, false); return true }); err != nil {
		s.log.Error("reading the push outbox", "err", err)
	}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		changed := s.deps.Leadership.MembersChanged()
		if !s.deps.Leadership.IsLeader() {
			return
		}
		t.startDue()
		timer.Reset(t.untilNextDue())
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-s.wake:
			for _, id := range s.drainStaged() {
				t.add(id, true)
			}
		case <-timer.C:
		}
	}
}

// message is one outbox entry while the term handles it.
type message struct {
	id  snowflake.ID
	due time.Time
	// atCommit: the sender heard of it at its commit (so connections
	// read at planning are those at the commit).
	atCommit bool

	planned chan struct{} // closed when plan is set
	plan    *plan         // nil: nothing to push (or the plan failed)
	planErr error
	mu      sync.Mutex
	pending int // devices queued or waiting for a retry, +1 until all are queued
	// readErr: a user's devices could not be decided (a read failed);
	// the message is planned again once the others are through.
	readErr error
	// ackDeadline: a connected device not reported unacknowledged by
	// then is held back as connected (SenderConfig.AckTimeout).
	ackDeadline time.Time
	// deferred are the connected devices waiting for that (under mu).
	deferred []deferredDevice
	// Under the term's ackWait.mu: ackIdx is m's place in its schedule
	// (-1: not in it), ackAt the deadline there (monotonic), ackWoken an
	// unacknowledged delivery reported since m was last decided.
	ackIdx   int
	ackAt    time.Time
	ackWoken bool
}

// deferredDevice is a connected device whose decision waits for its
// acknowledgement.
type deferredDevice struct {
	uid string
	reg Registered
}

// add schedules message id unless the term has it already.
func (t *term) add(id snowflake.ID, atCommit bool) {
	t.mu.Lock()
	if _, ok := t.known[id]; ok {
		t.mu.Unlock()
		return
	}
	m := t.newMessage(id, atCommit)
	t.known[id] = m
	heap.Push(&t.schedule, m)
	t.mu.Unlock()
	if atCommit {
		// Plan now: who was connected at the commit matters.
		select {
		case t.planning <- m:
		case <-t.ctx.Done():
		}
	}
}

// newMessage is message id as the term schedules it: due at the end of
// its grace period.
func (t *term) newMessage(id snowflake.ID, atCommit bool) *message {
	committed := id.Time()
	if now := t.s.now(); atCommit && now.After(committed) {
		// The grace runs from the commit here: a message whose ID is
		// behind this clock (its node's clock was behind, or it came
		// from another region) may be being read right now.
		committed = now
	}
	return &message{id: id, due: committed.Add(t.s.cfg.Grace), atCommit: atCommit, planned: make(chan struct{}),
		ackDeadline: committed.Add(t.s.cfg.AckTimeout + ackSlack), ackIdx: -1}
}

// startDue hands the messages whose grace period is over to the
// executors.
func (t *term) startDue() {
	now := t.s.now()
	for {
		t.mu.Lock()
		if len(t.schedule) == 0 || t.schedule[0].due.After(now) {
			t.mu.Unlock()
			return
		}
		m := heap.Pop(&t.schedule).(*message)
		t.mu.Unlock()
		if !m.atCommit {
			select {
			case t.planning <- m:
			case <-t.ctx.Done():
				return
			}
		}
		t.mu.Lock()
		t.ready = append(t.ready, m)
		t.mu.Unlock()
		t.wakeExecutor()
	}
}

func (t *term) wakeExecutor() {
	select {
	case t.readyWake <- struct{}{}:
	default:
	}
}

// executeLoop executes the messages made ready, one at a time, until the
// term ends; what is still ready then is the next leader's.
func (t *term) executeLoop() {
	for {
		t.mu.Lock()
		var m *message
		if len(t.ready) > 0 {
			m = t.ready[0]
			t.ready[0] = nil
			t.ready = t.ready[1:]
		}
		more := len(t.ready) > 0
		t.mu.Unlock()
		if more {
			t.wakeExecutor()
		}
		if m != nil {
			t.execute(m)
			continue
		}
		select {
		case <-t.readyWake:
		case <-t.ctx.Done():
			return
		}
	}
}

func (t *term) untilNextDue() time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.schedule) == 0 {
		return time.Hour
	}
	return max(t.schedule[0].due.Sub(t.s.now()), 0)
}

func (t *term) planLoop() {
	for {
		select {
		case m := <-t.planning:
			p, err := t.s.planMessage(m.id, m.atCommit, func(cid string) bool { return t.prog.handledHere(m.id, cid) })
			if err != nil && t.ctx.Err() == nil {
				t.s.log.Error("planning the pushes of a message; trying again", "message", m.id, "err", err)
			}
			m.plan, m.planErr = p, err
			close(m.planned)
		case <-t.ctx.Done():
			return
		}
	}
}

// execute decides and queues the pushes of a due message.
func (t *term) execute(m *message) {
	select {
	case <-m.planned:
	case <-t.ctx.Done():
		return
	}
	switch {
	case t.ctx.Err() != nil:
		return
	case m.planErr != nil:
		t.replanLater(m, m.planErr)
		return
	case m.plan == nil:
		t.done(m)
		return
	}
	m.pending = 1 // held until every device is queued and none waits for its acknowledgement
	t.s.decideAndQueue(t, m)
	if t.waitAcks(m) {
		return // the ack schedule ends the hold
	}
	t.finish(m, "")
}

// finish ends one pending device of m (clientID "" ends the hold of
// execute); the message is done when none is left.
func (t *term) finish(m *message, clientID string) {
	if t.ctx.Err() != nil {
		return // the next leader redoes what this term did not record
	}
	if clientID != "" {
		t.prog.addHandled(m.id, clientID)
	}
	m.mu.Lock()
	m.pending--
	last := m.pending == 0
	readErr := m.readErr
	m.mu.Unlock()
	switch {
	case last && readErr != nil:
		t.replanLater(m, readErr)
	case last:
		t.done(m)
	}
}

// decideFailed notes that a user's devices of m could not be decided, so
// that m is planned again instead of finishing with those pushes lost.
func (t *term) decideFailed(m *message, uid, what string, err error) {
	t.s.log.Error("push: reading what a push is decided on; planning the message again", "message", m.id,
		"uid", uid, "reading", what, "err", err)
	m.mu.Lock()
	m.readErr = fmt.Errorf("%s of %s: %w", what, uid, err)
	m.mu.Unlock()
}

// replanLater gives a message whose plan failed, or some of whose
// devices could not be decided (a read error), another try in a while
// (the devices handled meanwhile are skipped). It stays in the outbox
// meanwhile, but not past the day a push of it is worth sending: a
// failure that lasts would otherwise keep it there, tried every few
// seconds, for ever.
func (t *term) replanLater(m *message, cause error) {
	if !t.s.now().Before(m.id.Time().Add(MessageExpiry)) {
		t.s.log.Warn("push: giving up the pushes of a message that could not be planned within its lifetime",
			"message", m.id, "err", cause)
		t.done(m)
		return
	}
	// Back in the schedule as a message the term did not hear of at its
	// commit, due replanDelay from now: planned again then (the
	// schedule's one timer, not a goroutine each: a failure that lasts,
	// a database refusing reads, makes every message come this way).
	r := t.newMessage(m.id, false)
	r.due = t.s.now().Add(replanDelay)
	t.mu.Lock()
	t.known[m.id] = r
	heap.Push(&t.schedule, r)
	t.mu.Unlock()
	t.s.poke()
}

func (t *term) done(m *message) {
	t.prog.done(m.id)
	t.mu.Lock()
	delete(t.known, m.id)
	t.mu.Unlock()
}

// dueHeap orders messages by due time, then ID.
type dueHeap []*message

func (h dueHeap) Len() int { return len(h) }
func (h dueHeap) Less(i, j int) bool {
	if !h[i].due.Equal(h[j].due) {
		return h[i].due.Before(h[j].due)
	}
	return h[i].id < h[j].id
}
func (h dueHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *dueHeap) Push(x any)   { *h = append(*h, x.(*message)) }
func (h *dueHeap) Pop() any {
	old := *h
	m := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return m
}

// plan is what a message needs pushed, read once.
type plan struct {
	msg   Message
	users []userPlan
}

// userPlan is a candidate recipient's devices not yet handled.
type userPlan struct {
	uid     string
	devices []Registered
	// onlineAtCommit[i] tells whether devices[i] was connected when the
	// message was planned at its commit (nil: none was). A slice, not a
	// map by client ID: a group message's plan holds one per member
	// until its ack deadline (a map was half of a waiting plan's memory).
	onlineAtCommit []bool
	// final: the devices' acknowledgement is waited for no longer
	// (ackWait at the deadline).
	final bool
}

// markOnline notes that devices[i] was connected at the commit.
func (u *userPlan) markOnline(i int) {
	if len(u.onlineAtCommit) <= i {
		u.onlineAtCommit = append(u.onlineAtCommit, make([]bool, i+1-len(u.onlineAtCommit))...)
	}
	u.onlineAtCommit[i] = true
}

// wasOnline tells whether devices[i] was connected at the commit.
func (u *userPlan) wasOnline(i int) bool {
	return i < len(u.onlineAtCommit) && u.onlineAtCommit[i]
}

// planMessage reads message id and its candidates, without the devices
// recorded as handled or handledHere (recorded by this term, maybe not
// committed yet). A nil plan with a nil error means there is nothing to
// push (the message is gone, or nobody is a candidate).
func (s *Sender) planMessage(id snowflake.ID, atCommit bool, handledHere func(cid string) bool) (*plan, error) {
	payload, ok, err := s.deps.Archive.Message(id)
	if err != nil || !ok {
		return nil, err
	}
	var env wire.Envelope
	if err := json.Unmarshal(payload, &env); err != nil {
		return nil, fmt.Errorf("stored message %d: %w", id, err)
	}
	m := Message{ID: id, From: env.From, SenderName: s.deps.Directory.DisplayName(env.From), To: env.To,
		Group: env.Group, Type: env.Type, Body: env.Body, Mentions: env.Mentions, CommittedAt: id.Time()}
	if env.Media != nil {
		m.MediaMIME = env.Media.Mime
	}
	if env.ReplyTo != nil {
		if p, ok, err := s.deps.Archive.MessageIn(*env.ReplyTo, env.From, env.To, env.Group); err == nil && ok {
			var orig wire.Envelope
			if json.Unmarshal(p, &orig) == nil {
				m.ReplyToAuthor = orig.From
			}
		}
	}
	recipients, err := s.recipients(&m)
	if err != nil {
		return nil, err
	}
	candidates := Candidates(m, recipients, s.cfg.GroupLimit)
	if len(candidates) == 0 {
		return nil, nil
	}
	handled, err := s.deps.Outbox.Handled(id)
	if err != nil {
		return nil, err
	}
	p := &plan{msg: m, users: make([]userPlan, 0, len(candidates))}
	for _, r := range candidates {
		regs, err := s.deps.Registrations.Devices(r.UID)
		if err != nil {
			return nil, err
		}
		u := userPlan{uid: r.UID}
		for _, reg := range regs {
			cid := r.UID + "/" + reg.Name
			if _, done := slices.BinarySearch(handled, cid); done || handledHere(cid) {
				continue
			}
			if atCommit && s.deps.Connections.Connected(cid) {
				u.markOnline(len(u.devices))
			}
			u.devices = append(u.devices, reg)
		}
		if len(u.devices) > 0 {
			p.users = append(p.users, u)
		}
	}
	if len(p.users) == 0 {
		return nil, nil
	}
	return p, nil
}

// recipients are the users a message may push: the recipient of a direct
// message; every member of a group up to the group limit; in a larger
// group only those who can be candidates at all (mentioned, the replied
// author, opted in), so that a message to 10,000 members reads 10,000
// nothing.
func (s *Sender) recipients(m *Message) ([]Recipient, error) {
	if !m.IsGroup() {
		return []Recipient{{UID: m.To}}, nil
	}
	name, members, err := s.deps.Directory.Group(m.Group)
	if errors.Is(err, wire.ErrNotFound) {
		return nil, nil // deleted, or a region's mirror dropped: nobody to push
	}
	if err != nil {
		return nil, fmt.Errorf("group %s: %w", m.Group, err)
	}
	m.GroupName, m.GroupMembers = name, len(members)
	if len(members) <= s.cfg.GroupLimit {
		out := make([]Recipient, len(members))
		for i, uid := range members {
			out[i] = Recipient{UID: uid}
		}
		return out, nil
	}
	optIns, err := s.deps.Preferences.GroupOptIns(m.Group)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var out []Recipient
	add := func(uid string, optedIn bool) {
		if uid == "" || seen[uid] || !s.deps.Directory.IsMember(m.Group, uid) {
			return
		}
		seen[uid] = true
		out = append(out, Recipient{UID: uid, OptedIn: optedIn})
	}
	for _, uid := range optIns {
		add(uid, true)
	}
	for uid := range mentionSet(*m) {
		add(uid, false)
	}
	add(m.ReplyToAuthor, false)
	return out, nil
}

// decideAndQueue decides each planned device of m now and queues the
// pushes; users are read in parallel (a large opted-in group has
// thousands).
func (s *Sender) decideAndQueue(t *term, m *message) {
	users := m.plan.users
	if len(users) == 1 { // a direct message: no goroutine
		s.decideUser(t, m, users[0])
		return
	}
	workers := min(planWorkers, len(users))
	var next sync.Mutex
	i := 0
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for t.ctx.Err() == nil {
				next.Lock()
				if i == len(users) {
					next.Unlock()
					return
				}
				u := users[i]
				i++
				next.Unlock()
				s.decideUser(t, m, u)
			}
		})
	}
	wg.Wait()
}

// decideUser reads what one user's devices are decided on, once, and
// queues a push for each device that gets one. The registrations are
// read again here, not taken from the plan: during the grace period a
// device may have signed out, its token may have moved to another user
// (a phone that changed hands) or the account may have been deleted,
// and a push must never carry the message to whoever holds the token
// now.
func (s *Sender) decideUser(t *term, m *message, u userPlan) {
	msg := m.plan.msg
	now := s.now()
	current, err := s.deps.Registrations.Devices(u.uid)
	if err != nil {
		t.decideFailed(m, u.uid, "devices", err)
		return
	}
	st, err := s.readUserState(u.uid, msg, now)
	if err != nil {
		t.decideFailed(m, u.uid, "push state", err)
		return
	}
	var n *Notification
	for i, planned := range u.devices {
		cid := u.uid + "/" + planned.Name
		reg, ok, err := s.currentDevice(u.uid, current, planned.Name)
		if err != nil {
			t.decideFailed(m, u.uid, "sign-in sessions", err)
			return
		}
		if !ok {
			// Signed out (or the token moved away) since the plan: handled,
			// so that no later term pushes it either.
			s.sm.decided(verdictUnregistered)
			t.prog.addHandled(m.id, cid)
			continue
		}
		connected := u.wasOnline(i) || s.deps.Connections.Connected(cid)
		if connected && s.acks() {
			unacked, err := s.deps.Unacked.Unacked(msg.ID, cid)
			if err != nil {
				t.decideFailed(m, u.uid, "unacknowledged deliveries", err)
				return
			}
			switch {
			case unacked:
				// Connected, but the message never reached the app (a
				// half-open connection): pushed as if offline.
				connected = false
				s.sm.unacked.Inc()
			case !u.final && now.Before(m.ackDeadline) && Decide(msg, st.device(u.uid, reg.Name, false), now) == PushNow:
				// Offline it would be pushed: wait for its acknowledgement.
				m.mu.Lock()
				m.deferred = append(m.deferred, deferredDevice{uid: u.uid, reg: planned})
				m.mu.Unlock()
				continue
			}
		}
		v := Decide(msg, st.device(u.uid, reg.Name, connected), now)
		s.sm.decided(v)
		if v != PushNow {
			// Held back for good (LESSONS 18): recorded, so that a new
			// leader does not decide it again and push it later.
			t.prog.addHandled(m.id, cid)
			continue
		}
		if n == nil {
			built, err := s.build(msg, u.uid)
			if err != nil {
				t.decideFailed(m, u.uid, "preview or unread count", err)
				return
			}
			n = &built
		}
		// The current registration: a device that registered a new token
		// under the same device ID is still this user's device.
		j := &job{msg: m, uid: u.uid, reg: reg, n: *n, decidedAt: now}
		m.mu.Lock()
		m.pending++
		m.mu.Unlock()
		t.retries.makeRoom(string(reg.Device.Platform), 1) // a new push goes before an old retry
		if err := t.queues.Push(string(reg.Device.Platform), j); err != nil {
			t.finish(m, "") // closed: the term is over
		}
	}
}

// userState is what a user's devices are decided on besides their
// connection.
type userState struct {
	mutes      []Mute
	dnd        *DND
	readUpTo   snowflake.ID
	lateUnread bool // a message below readUpTo counts as unread
	blocked    bool // the user blocked the message's sender
}

func (s *Sender) readUserState(uid string, msg Message, now time.Time) (userState, error) {
	var st userState
	var err error
	if st.mutes, err = s.deps.Preferences.Mutes(uid, now); err != nil {
		return st, fmt.Errorf("mutes: %w", err)
	}
	if st.dnd, err = s.deps.Preferences.DND(uid); err != nil {
		return st, fmt.Errorf("do-not-disturb: %w", err)
	}
	if st.readUpTo, err = s.deps.Archive.ReadUpTo(uid, msg.From, msg.Group); err != nil {
		return st, fmt.Errorf("read cursor: %w", err)
	}
	if st.readUpTo != 0 && st.readUpTo >= msg.ID {
		// The message's ID is at or below the cursor: read, unless it
		// came late and still counts as unread.
		if st.lateUnread, err = s.deps.Archive.LateUnread(uid, msg.From, msg.Group); err != nil {
			return st, fmt.Errorf("unread below the read cursor: %w", err)
		}
	}
	st.blocked = s.deps.Blocks != nil && s.deps.Blocks.IsBlocked(uid, msg.From)
	return st, nil
}

func (st userState) device(uid, device string, connected bool) DeviceState {
	d := DeviceState{UID: uid, Device: device, Mutes: st.mutes, DND: st.dnd, ReadUpTo: st.readUpTo,
		LateUnread: st.lateUnread, SenderBlocked: st.blocked}
	if connected {
		d.Connected = []string{uid + "/" + device}
	}
	return d
}

// currentDevice is uid's registration of device name among regs (read
// now), if it has one and it is signed in: a registration whose sign-in
// session has ended is as good as gone.
func (s *Sender) currentDevice(uid string, regs []Registered, name string) (Registered, bool, error) {
	reg, ok := findDevice(regs, name)
	if !ok || s.deps.SignedIn == nil {
		return reg, ok, nil
	}
	in, err := s.deps.SignedIn.DeviceSignedIn(uid, name, reg.Session)
	if err != nil {
		return Registered{}, false, err
	}
	return reg, in, nil
}

// findDevice is the registration of device name among regs.
func findDevice(regs []Registered, name string) (Registered, bool) {
	for _, r := range regs {
		if r.Name == name {
			return r, true
		}
	}
	return Registered{}, false
}

// findToken is the registration among regs that sends to where d does.
func findToken(regs []Registered, d Device) (Registered, bool) {
	for _, r := range regs {
		if r.Device.Platform == d.Platform && tokenOf(r.Device) == tokenOf(d) {
			return r, true
		}
	}
	return Registered{}, false
}

func (s *Sender) build(msg Message, uid string) (Notification, error) {
	preview, err := s.deps.Preferences.Preview(uid)
	if err != nil {
		return Notification{}, err
	}
	unread, err := s.deps.Archive.UnreadTotal(uid)
	if err != nil {
		return Notification{}, err
	}
	return Build(msg, BuildOptions{Recipient: uid, Preview: preview, Unread: unread}), nil
}

// job is one push to one device.
type job struct {
	msg       *message
	uid       string
	reg       Registered
	n         Notification
	attempts  int
	decidedAt time.Time // by the sender's clock
}

func (j *job) clientID() string { return j.uid + "/" + j.reg.Name }

// sendBatch sends a queue's batch, every push at once, and acknowledges
// it: what must be tried again is re-queued after its delay, so that one
// slow retry never holds the queue.
func (t *term) sendBatch(ctx context.Context, b peerqueue.Batch[*job]) error {
	var wg sync.WaitGroup
	for _, j := range b.Items {
		wg.Go(func() { t.send(ctx, j) })
	}
	wg.Wait()
	return nil
}

func (t *term) send(ctx context.Context, j *job) {
	s := t.s
	sctx, cancel := context.WithTimeout(ctx, s.cfg.SendTimeout)
	defer cancel()
	if (j.attempts > 0 || !s.now().Before(j.decidedAt.Add(queuedRecheck))) && !t.stillWanted(j) {
		return
	}
	j.attempts++
	res, err := s.deps.Provider.Send(sctx, j.reg.Device, j.n)
	if t.ctx.Err() != nil {
		return // the term ended: not recorded, the next leader sends it
	}
	now := s.now()
	if res.Outcome != 0 {
		s.sm.latency.Observe(now.Sub(j.msg.plan.msg.CommittedAt).Seconds())
	}
	platform := string(j.reg.Device.Platform)
	switch res.Outcome {
	case Delivered:
	case DeadToken:
		t.removeDead(j, res)
	case Failed:
		logFailure(s.log, platform, logToken(j.reg.Device), res, err)
		s.sm.givenUp(reasonRejected)
	default: // RetryLater, or no answer at all
		delay := s.retryDelay(j.attempts, res.RetryAfter)
		if j.attempts >= s.cfg.MaxAttempts || !now.Add(delay).Before(j.n.Expiry) {
			logFailure(s.log, platform, logToken(j.reg.Device), res, err)
			s.sm.givenUp(reasonAttempts)
			break
		}
		s.sm.retries.Inc()
		t.retryAfter(j, delay)
		return
	}
	t.finish(j.msg, j.clientID())
}

// stillWanted decides a retry (or a push that waited in its queue)
// again before it is sent, as at the end of the grace period: the device may have signed out or moved its token,
// the user may have read or muted the conversation, or the device may
// be connected by now. A push no longer wanted is handled; a read error
// puts the retry back (it is not an attempt).
func (t *term) stillWanted(j *job) bool {
	s := t.s
	msg := j.msg.plan.msg
	now := s.now()
	regs, err := s.deps.Registrations.Devices(j.uid)
	var st userState
	if err == nil {
		st, err = s.readUserState(j.uid, msg, now)
	}
	if err != nil {
		s.log.Error("push: reading what a retry is decided on; trying later", "uid", j.uid, "err", err)
		t.retryAfter(j, s.retryDelay(j.attempts, 0))
		return false
	}
	reg, ok, err := s.currentDevice(j.uid, regs, j.reg.Name)
	if err != nil {
		s.log.Error("push: reading what a retry is decided on; trying later", "uid", j.uid, "err", err)
		t.retryAfter(j, s.retryDelay(j.attempts, 0))
		return false
	}
	if !ok {
		s.sm.decided(verdictUnregistered)
		t.finish(j.msg, j.clientID())
		return false
	}
	j.reg = reg
	connected := s.deps.Connections.Connected(j.clientID())
	if connected && s.acks() {
		unacked, err := s.deps.Unacked.Unacked(msg.ID, j.clientID())
		if err != nil {
			s.log.Error("push: reading what a retry is decided on; trying later", "uid", j.uid, "err", err)
			t.retryAfter(j, s.retryDelay(j.attempts, 0))
			return false
		}
		connected = !unacked // the half-open connection it was pushed for
	}
	if v := Decide(msg, st.device(j.uid, reg.Name, connected), now); v != PushNow {
		s.sm.decided(v)
		t.finish(j.msg, j.clientID())
		return false
	}
	return true
}

// removeDead removes the registration of a token the provider reported
// dead, judged on the registration as it is now: the token may have
// moved to another device, or been registered again after the provider
// saw it dead.
func (t *term) removeDead(j *job, res Result) {
	s := t.s
	regs, err := s.deps.Registrations.Devices(j.uid)
	if err != nil {
		s.log.Warn("push: reading the devices to remove a dead token", "uid", j.uid, "err", err)
		return
	}
	if reg, ok := findToken(regs, j.reg.Device); ok {
		removeDeadToken(t.ctx, s.deps.Registrations, s.deps.Metrics, s.log, j.uid, reg, res)
	}
}

// retryAfter queues j again after d, unless the term ends first (see
// retryWait for the bound).
func (t *term) retryAfter(j *job, d time.Duration) { t.retries.add(j, d) }

// retryDelay is exponential from RetryMin to RetryMax with "equal
// jitter" (half fixed, half random, so that devices that failed together
// do not retry together), and never shorter than the provider's
// Retry-After.
func (s *Sender) retryDelay(attempt int, retryAfter time.Duration) time.Duration {
	d := s.cfg.RetryMin
	for i := 1; i < attempt && d < s.cfg.RetryMax; i++ {
		d *= 2
	}
	d = min(d, s.cfg.RetryMax)
	d = d/2 + rand.N(d/2+1)
	return max(d, retryAfter)
}

// overflowed: the queue dropped the oldest pushes to make room; they are
// given up, so that their messages can finish.
func (t *term) overflowed(_ string, jobs []*job) {
	for _, j := range jobs {
		t.s.sm.givenUp(reasonOverflow)
		t.finish(j.msg, j.clientID())
	}
}

// logToken is what logFailure takes of d: the token (it shortens it), or
// a Web Push endpoint already redacted (its path is the subscription's
// secret).
func logToken(d Device) string {
	if d.Platform == WebPush {
		return redactEndpoint(d.Endpoint)
	}
	return d.Token
}

func tokenOf(d Device) string {
	if d.Platform == WebPush {
		return d.Endpoint
	}
	return d.Token
}
