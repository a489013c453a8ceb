// Package archive is edgechat's durable message store: every direct and
// group message is committed through the Raft log and applied into Badger
// under r/arch/, with indexes for conversation history (newest first), a
// sync stream in commit order (so a reconnecting client never misses a
// message even when node clocks disagree), conversation summaries with
// unread counts, read cursors, and deduplication of retried publishes by
// (sender, client message ID). It also offers the /chat HTTP endpoints:
// history, sync, conversations, sending and marking read.
//
// Writes go only through the Proposer and the FSM handlers registered by
// New; reads come straight from the local Badger. Group membership and
// blocks belong to the users service and are asked through the Groups
// and Blocks interfaces on the node that proposes (FSM handlers cannot
// read another service's keys).
//
// HTTP (Routes; every endpoint needs a principal; unknown or repeated
// query parameters are refused with 400 "validation_failed"):
//
//	GET  /chat/history?with={uid}|group={gid}&before={id}&limit={n}  newest first; limit 1..200 (50)
//	     {"messages":[envelope...],"hasMore":bool}; a group's history is for its
//	     current members only (404 "not_found" for anyone else)
//	GET  /chat/sync?since={cursor}&limit={n}            oldest first in commit order; limit 1..1000 (500)
//	     {"messages":[...],"cursor":"...","hasMore":bool}; the cursor is opaque (today a
//	     decimal commit position); an empty since means from the beginning. Direct
//	     messages and the messages of the groups I am a member of at query time
//	GET  /chat/conversations?limit={n}&cursor={c}       latest activity first; limit 1..1000 (200)
//	     {"conversations":[{"peer"|"group","lastMessage","unread","peerRead"?}],"hasMore":bool,
//	     "nextCursor"?}; nextCursor (with hasMore) is the next page's cursor, an empty
//	     cursor the first page; unread is capped at 1000
//	POST /chat/messages                                  {"to"|"group", envelope fields}, at most 32 KiB;
//	     201 with the stored envelope, 200 with the original one for a retried cid
//	     (400 "invalid_envelope" for a cid stored for another conversation);
//	     403 "forbidden" when blocked by the recipient or not a member of the group
//	POST /chat/read                                      {"with"|"group", "upTo"}, at most 1 KiB; 204
//
// Decisions: a read cursor only moves forward and is clamped to the
// conversation's newest message (so later messages still count as
// unread); a cursor for a conversation without messages is ignored.
// Dedupe entries are kept forever (a cid is unique per sender for good,
// across direct and group messages), unless an erased account's direct
// conversation takes them along (erase.go). A group message is written once (no
// per-member keys), so its cost does not grow with the group; members
// find it at read time through Groups.GroupsOf. Hence a group's messages
// sync only while you are a member, a new member reads earlier messages
// through history (which shows a member the whole group history), and a
// group's unread count is the group's messages from others above your
// cursor, or stored after your last read (a read at the cursor itself
// counts again: a late message below it stops counting).
//
// Unread counts are kept, not counted: the FSM keeps each direct
// conversation's count in its summary and, for groups, a message count
// per group and per-member counts in the member's cursor (keys.go), so
// the conversation list reads O(1) keys per conversation whatever the
// history's size; a cursor move recounts what lies above the new cursor.
package archive

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/internal/snowflake"
	"github.com/edgechat/edgechat/internal/wire"
)

// Proposer appends a command to the Raft log (batched with others) and
// returns the value or error of its FSM handler, unchanged. Errors wrap
// wire.ErrUnavailable when it cannot commit.
type Proposer interface {
	Propose(ctx context.Context, t byte, payload []byte) (any, error)
}

// Registrar installs FSM handlers (*fsm.FSM).
type Registrar interface {
	Register(t byte, h fsm.Handler)
}

// Publisher publishes into the broker.
type Publisher interface {
	Publish(o wire.Outbound) error
}

// IDSource hands out message IDs (*snowflake.Generator).
type IDSource interface {
	Next() snowflake.ID
}

// Directory tells whether a user exists (the auth service).
type Directory interface {
	UserExists(uid string) (bool, error)
}

// Groups answers membership questions (the users service). IsMember must
// be cheap (cached): it is asked on every group send and history read.
type Groups interface {
	IsMember(gid, uid string) bool
	// GroupsOf lists uid's groups, sorted.
	GroupsOf(uid string) ([]string, error)
}

// Blocks tells whether blocker has blocked blocked (the users service).
type Blocks interface {
	IsBlocked(blocker, blocked string) bool
}

// Outbox hears of each newly stored message (not of a retried one)
// inside the FSM transaction that stores it, on every node, so that what
// it writes commits with the message: the push bridge's outbox
// (services/push). It must read and write only replicated keys. The
// function it returns, if any, runs once the transaction is committed.
type Outbox interface {
	Stage(tx *badger.Txn, m Stored) (afterCommit func(), err error)
}

// Media checks the upload a media message names and fills in what
// clients render (services/media): a ready upload of sender, which the
// conversation (peer, or group gid) may then read, as sent by message
// msg. Errors wrap wire.ErrMediaNotReady. ExpireSent is told by the
// retention sweeper, before it deletes a conversation's messages below
// cutoff (the direct one of a and b, or group gid when gid is not
// empty), which media they carry: the media no newer message of the
// conversation carries is no longer the conversation's to read, and
// media nobody may read any more is deleted (see services/media/expire.go).
type Media interface {
	AttachSent(ctx context.Context, sender string, m *wire.Media, peer, gid string, msg snowflake.ID) error
	ExpireSent(ctx context.Context, a, b, gid string, cutoff snowflake.ID, ids []string) error
}

// Stored names a stored message for the Outbox.
type Stored struct {
	ID    snowflake.ID
	From  string
	To    string // a direct message's recipient (name@region for another region's user)
	Group string // a group message's group
	// Payload is the stored envelope JSON (valid only during Stage).
	Payload []byte
}

// Regions knows this cluster's region and its links (bridge/region):
// a direct message may go to name@region of a linked region; name@Local
// is the local user name.
type Regions interface {
	Local() string
	Linked(region string) bool
}

// The ground-floor types the node wires in satisfy these interfaces.
var (
	_ Registrar = (*fsm.FSM)(nil)
	_ IDSource  = (*snowflake.Generator)(nil)
)

// Deps are the archive's collaborators. Logger and Registerer may be nil;
// so may Groups (group messages and group history are then refused as
// not found), Blocks (nobody is blocked) and Outbox (no push outbox).
type Deps struct {
	DB        *badger.DB
	Proposer  Proposer
	FSM       Registrar
	Publisher Publisher
	IDs       IDSource
	Users     Directory
	Groups    Groups
	Blocks    Blocks
	Outbox    Outbox
	Media     Media
	// Regions: nil means no links (name@region addresses another region
	// are refused as wire.ErrNoRegion).
	Regions Regions
	// Segments is where sealed segments live (issue 11); nil: nothing is
	// sealed and sealed messages (from a restored backup) cannot be read.
	Segments SegmentStore
	// SegmentCacheBytes bounds the decoded segment blocks a node keeps
	// (default 32 MiB).
	SegmentCacheBytes int64
	// FetchSegment reads a segment object from another node, for a local
	// store that lacks one (a node that installed a snapshot holds the
	// index entries of segments sealed before, not their files); nil: a
	// missing segment is an error.
	FetchSegment func(ctx context.Context, key string) (io.ReadCloser, error)
	// StoreCheck, on the leader before it seals or rewrites a segment,
	// says how many members keep sealed segments in another store than
	// this node, and why (storecheck.go); nil: not checked.
	StoreCheck func(ctx context.Context) (mismatched int, err error)
	// Backups describes the scheduled backups for GET /admin/archive (a
	// JSON value; nil: none are configured).
	Backups func() any
	// Live delivers the messages this node stores to its own subscribers,
	// on every node (live.go); nil: the node a message is sent on
	// delivers it to every node's subscribers (tests without a broker).
	Live LiveDelivery
	// ReadBarrier waits until this node has applied every write committed
	// before the call (cluster.Raft.ReadBarrier); the catch-up reads
	// (/chat/sync, /chat/conversations, a conversation's newest history
	// page) run it first, so that a client that subscribed and then reads
	// on a follower misses nothing committed before. nil: no wait.
	ReadBarrier func(ctx context.Context) error
	Logger      *slog.Logger
	Registerer  prometheus.Registerer
}

// ErrMissingDep is returned by New when a required dependency is nil.
var ErrMissingDep = errors.New("archive: missing dependency")

// Service is the archive.
type Service struct {
	db      *badger.DB
	prop    Proposer
	pub     Publisher
	ids     IDSource
	users   Directory
	groups  Groups                          // nil: no groups
	blocks  Blocks                          // nil: no blocks
	media   Media                           // nil: media messages are stored as sent
	regions Regions                         // nil: no links
	tier    *tierReader                     // nil: no segment store
	ownerc  ownerCache                      // the cluster's owner ID (owner.go)
	backups func() any                      // nil: none
	barrier func(ctx context.Context) error // nil: reads need no barrier
	log     *slog.Logger
	applied func() (uint64, error) // the FSM's applied index; nil: unknown

	st *fsmState // what the FSM handlers keep in memory

	expireReadMax int // expiring messages read per conversation and sweep (0: expireReadMax)

	messages *prometheus.CounterVec
	retries  prometheus.Counter // messages proposed again after a leader change
	metrics  tierMetrics
	stores   storeCheck    // the members' segment stores, checked before sealing (storecheck.go)
	stored   atomic.Uint64 // messages stored by this process (what the "stored" counter counts)
}

// Metric result labels.
const (
	resultStored    = "stored"
	resultDuplicate = "duplicate"
	resultRefused   = "refused"
)

// New checks deps, registers the archive's FSM handlers for
// wire.CmdMessage and wire.CmdReadCursor, and registers its metrics.
func New(deps Deps) (*Service, error) {
	switch {
	case deps.DB == nil:
		return nil, fmt.Errorf("%w: DB", ErrMissingDep)
	case deps.Proposer == nil:
		return nil, fmt.Errorf("%w: Proposer", ErrMissingDep)
	case deps.FSM == nil:
		return nil, fmt.Errorf("%w: FSM", ErrMissingDep)
	case deps.Publisher == nil:
		return nil, fmt.Errorf("%w: Publisher", ErrMissingDep)
	case deps.IDs == nil:
		return nil, fmt.Errorf("%w: IDs", ErrMissingDep)
	case deps.Users == nil:
		return nil, fmt.Errorf("%w: Users", ErrMissingDep)
	}
	log := deps.Logger
	if log == nil {
		log = slog.Default()
	}
	s := &Service{
		db: deps.DB, prop: deps.Proposer, pub: deps.Publisher, ids: deps.IDs, users: deps.Users,
		groups: deps.Groups, blocks: deps.Blocks, media: deps.Media, regions: deps.Regions,
		log: log.With("component", "archive"), backups: deps.Backups, barrier: deps.ReadBarrier,
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgechat_archive_messages_total",
			Help: "Messages offered to the archive, by result (stored, duplicate, refused).",
		}, []string{"result"}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgechat_archive_message_retries_total",
			Help: "Messages proposed again because a leader change left their commit unknown or refused for now.",
		}),
	}
	for _, r := range []string{resultStored, resultDuplicate, resultRefused} {
		s.messages.WithLabelValues(r)
	}
	s.metrics = newTierMetrics()
	s.stores.check = deps.StoreCheck
	if deps.Segments != nil {
		cb := deps.SegmentCacheBytes
		if cb == 0 {
			cb = defaultSegmentCacheBytes
		}
		s.tier = newTierReader(deps.Segments, cb)
		s.tier.fetch, s.tier.log = deps.FetchSegment, s.log
	}
	if deps.Registerer != nil {
		for _, c := range []prometheus.Collector{s.messages, s.retries} {
			if err := deps.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("archive: register metrics: %w", err)
			}
		}
		if err := s.metrics.register(deps.Registerer, s.tier); err != nil {
			return nil, err
		}
	}
	// The handlers are not registered yet, so no archive key is being
	// written: the dedupe filter's first build can start here.
	st := &fsmState{outbox: deps.Outbox, segments: deps.Segments, sums: newSummaryCache(defaultSummaryCacheEntries), ids: &idTops{},
		cids: newCIDFilter(deps.DB, minCIDFilterKeys), started: &conversationHooks{}}
	if deps.Live != nil {
		st.live = &live{to: deps.Live, since: time.Now().Add(-liveSkew), m: newLiveMetrics()}
		if deps.Registerer != nil {
			for _, c := range st.live.m.collectors() {
				if err := deps.Registerer.Register(c); err != nil {
					return nil, fmt.Errorf("archive: register metrics: %w", err)
				}
			}
		}
	}
	if d, ok := deps.Users.(replicatedDeletions); ok {
		st.erasedIn = d.DeletedIn
	}
	sc := st.sums
	if r, ok := deps.FSM.(interface{ OnRestore(fn func()) }); ok {
		r.OnRestore(st.purge)
	}
	s.st = st
	if a, ok := deps.FSM.(interface{ AppliedIndex() (uint64, error) }); ok {
		s.applied = a.AppliedIndex
	}
	deps.FSM.Register(wire.CmdMessage, func(tx *badger.Txn, at fsm.Position, payload []byte) (any, error) {
		return applyMessage(tx, at, payload, st)
	})
	deps.FSM.Register(wire.CmdReadCursor, func(tx *badger.Txn, at fsm.Position, payload []byte) (any, error) {
		return applyReadCursor(tx, at, payload, sc, st.live)
	})
	deps.FSM.Register(wire.CmdSegmentSealed, func(tx *badger.Txn, at fsm.Position, payload []byte) (any, error) {
		return applySeal(tx, payload, st)
	})
	deps.FSM.Register(wire.CmdRetention, func(tx *badger.Txn, at fsm.Position, payload []byte) (any, error) {
		return applyRetention(tx, payload, st)
	})
	deps.FSM.Register(wire.CmdRetentionRefs, func(tx *badger.Txn, at fsm.Position, payload []byte) (any, error) {
		return applyRetentionRefs(tx, payload, st)
	})
	deps.FSM.Register(wire.CmdRetentionPtrs, func(tx *badger.Txn, at fsm.Position, payload []byte) (any, error) {
		return applyRetentionPtrs(tx, payload)
	})
	deps.FSM.Register(wire.CmdUndeliverable, applyUndeliverable) // undeliverable.go
	deps.FSM.Register(wire.CmdArchiveOwner, func(tx *badger.Txn, at fsm.Position, payload []byte) (any, error) {
		return applyOwner(tx, payload) // owner.go
	})
	return s, nil
}

func validUsers(uids ...string) error {
	for _, u := range uids {
		if err := wire.ValidUserID(u); err != nil {
			return fmt.Errorf("archive: user id %q: %w", u, wire.ErrInvalid)
		}
	}
	return nil
}

// SendDirect stores a direct message from one user to another. env must
// already have passed wire.ParseEnvelope. It stamps a new ID, From and To
// (clearing Group), completes Mentions (see stampMentions), commits the message through the Raft log and returns
// the stored envelope and its exact JSON (the bytes to deliver; do not
// re-encode). If (from, env.CID) was stored before, it returns that
// original message with dup=true and stores nothing, or, when the
// original is of another conversation, refuses (reusedCID). Errors wrap
// wire.ErrNotFound (no such recipient), wire.ErrForbidden (the recipient
// has blocked the sender), wire.ErrInvalid or wire.ErrUnavailable.
//
// The block is checked here, before proposing, because the FSM handler
// cannot read the users service's keys: a block committed while a message
// is in flight may let that one message through. A send refused for a
// block, a recipient or a media that this node's state refuses is
// answered with the original message when its cid was stored before
// (refusedRetry).
func (s *Service) SendDirect(ctx context.Context, from, to string, env wire.Envelope) (stored wire.Envelope, payload []byte, dup bool, err error) {
	wait, err := s.StartDirect(ctx, from, to, env)
	if err != nil {
		return wire.Envelope{}, nil, false, err
	}
	return wait(ctx)
}

// StartDirect is SendDirect in two steps, so that one connection can
// have many messages committing at once: it checks the message, stamps
// its ID and hands it to the Raft log before it returns (messages
// started one after another get increasing IDs and, on the leader,
// commit in that order), and the function it returns waits for the
// commit and answers as SendDirect does. Errors of the first step are
// SendDirect's refusals. The wait function must be called exactly once.
func (s *Service) StartDirect(ctx context.Context, from, to string, env wire.Envelope) (func(context.Context) (wire.Envelope, []byte, bool, error), error) {
	to, err := s.resolvePeer(to)
	if err != nil {
		s.count(false, err)
		return nil, err
	}
	// The ID first: a media message's grant keeps the message that sent it.
	id := s.ids.Next()
	if err := s.checkDirect(ctx, from, to, &env, id); err != nil {
		if wait, ok := s.refusedRetry(from, to, "", env.CID, env, err); ok {
			return wait, nil
		}
		s.count(false, err)
		return nil, err
	}
	env.ID = id
	env.From, env.To, env.Group = from, to, ""
	stampMentions(&env)
	payload := env.Marshal()
	return s.start(ctx, env, payload, msgCmd{ID: env.ID, From: from, To: to, CID: env.CID, Payload: payload}), nil
}

// checkDirect runs SendDirect's checks and attaches a media message.
// A recipient of another region (resolvePeer left it qualified) is
// checked by that region when the message arrives there.
func (s *Service) checkDirect(ctx context.Context, from, to string, env *wire.Envelope, id snowflake.ID) error {
	if strings.IndexByte(to, '@') >= 0 {
		if err := validUsers(from); err != nil {
			return err
		}
		if s.erasedHere(to) {
			return fmt.Errorf("archive: recipient %q (erased): %w", to, wire.ErrNotFound)
		}
		if err := checkClientFields(*env); err != nil {
			return err
		}
		// A media message: the grant names bob@us, which is what lets us
		// read the bytes from here (bridge/region media.go).
		return s.attachMedia(ctx, from, env, to, "", id)
	}
	if err := validUsers(from, to); err != nil {
		return err
	}
	if err := checkClientFields(*env); err != nil {
		return err
	}
	ok, err := s.users.UserExists(to)
	if err == nil && !ok {
		// Signed up through another node a moment ago?
		err = s.catchUp(ctx, "recipient")
		if err == nil {
			ok, err = s.users.UserExists(to)
		}
	}
	if err != nil {
		return fmt.Errorf("archive: looking up recipient %q: %w", to, err)
	}
	if !ok {
		return fmt.Errorf("archive: recipient %q: %w", to, wire.ErrNotFound)
	}
	if to != from && s.blocks != nil && s.blocks.IsBlocked(to, from) {
		// Unblocked through another node a moment ago?
		if err := s.catchUp(ctx, "block"); err != nil {
			return err
		}
		if s.blocks.IsBlocked(to, from) {
			return fmt.Errorf("archive: %q has blocked %q: %w", to, from, wire.RefusedByRecipient(to, "messages"))
		}
	}
	return s.attachMedia(ctx, from, env, to, "", id)
}

// refusedRetry answers a send that its checks refused (refusal) when
// (from, cid) is stored already (cid: env.CID, or a link's key): a retry of a message accepted
// before the state that refuses it now (the recipient blocked the
// sender, the sender left the group) gets the original message as a
// duplicate, as every retry does, not a refusal of a message that was
// stored and delivered. Nothing is stored, and a send that was never
// stored is refused as before. ok is false when the refusal stands.
func (s *Service) refusedRetry(from, to, gid, cid string, env wire.Envelope, refusal error) (wait func(context.Context) (wire.Envelope, []byte, bool, error), ok bool) {
	if !errors.Is(refusal, wire.ErrForbidden) && !errors.Is(refusal, wire.ErrNotFound) && !errors.Is(refusal, wire.ErrMediaNotReady) {
		return nil, false
	}
	var res *applied
	err := s.db.View(func(tx *badger.Txn) error {
		id, conv, found, err := getLocator(tx, from, dedupKey(from, cid))
		if err != nil || !found {
			return err
		}
		res, err = duplicateOf(tx, id, conv)
		return err
	})
	if err != nil {
		s.log.Warn("reading the original of a refused retry", "from", from, "cid", cid, "err", err)
		return nil, false
	}
	if res == nil {
		return nil, false
	}
	env.From, env.To, env.Group = from, to, gid
	stored, payload, dup, err := s.storedResult(env, nil, res, cid == env.CID)
	s.count(dup, err)
	return func(context.Context) (wire.Envelope, []byte, bool, error) { return stored, payload, dup, err }, true
}

// SentBefore reports whether from's message with this cid is stored
// (broker.RetryLookup): the broker then hands a publish it would refuse
// for a block to SendDirect, which answers the original (refusedRetry).
// A failed read says false: the refusal stands.
func (s *Service) SentBefore(from, cid string) bool {
	if cid == "" {
		return false
	}
	found := false
	err := s.db.View(func(tx *badger.Txn) error {
		var err error
		_, _, found, err = getLocator(tx, from, dedupKey(from, cid))
		return err
	})
	return err == nil && found
}

// catchUp waits until this node has applied every write the cluster
// committed before the call (Deps.ReadBarrier; nothing to wait for
// without one), for a send this node's state refuses: the recipient may
// have signed up or lifted a block, or the sender joined the group,
// through another node a moment ago. A node that cannot reach its
// leader cannot tell, and could not commit the message either:
// wire.ErrUnavailable.
func (s *Service) catchUp(ctx context.Context, what string) error {
	if s.barrier == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, readBarrierTimeout)
	defer cancel()
	if err := s.barrier(ctx); err != nil {
		return fmt.Errorf("archive: %s: catching up with the cluster: %w", what, err)
	}
	return nil
}

// checkClientFields re-checks the client fields that end up in keys or
// that later readers trust (the cid, the mentions), in case a caller
// skipped wire.ParseEnvelope.
func checkClientFields(env wire.Envelope) error {
	if env.CID == "" || len(env.CID) > wire.MaxCIDLen {
		return fmt.Errorf("archive: cid: %w", wire.ErrInvalid)
	}
	if len(env.Mentions) > wire.MaxMentions {
		return fmt.Errorf("archive: more than %d mentions: %w", wire.MaxMentions, wire.ErrInvalid)
	}
	for _, uid := range env.Mentions {
		if wire.ValidPeerID(uid) != nil { // name@region: a user of another region
			return fmt.Errorf("archive: mentions: not a user id: %w", wire.ErrInvalid)
		}
	}
	return nil
}

// stampMentions sets env.Mentions to the client's list followed by the
// users that @username tokens of the body name (wire.MergeMentions: each
// once, at most wire.MaxMentions). The server does the scan once, when
// it stores the message, so that every reader of the stored envelope (the
// push bridge, clients that highlight mentions) agrees on who was
// mentioned without scanning bodies again, and clients that never fill
// the list still mention.
func stampMentions(env *wire.Envelope) {
	env.Mentions = wire.MergeMentions(env.Mentions, wire.ScanMentions(env.Body))
}

// attachMedia has the media service check and fill a media message.
func (s *Service) attachMedia(ctx context.Context, from string, env *wire.Envelope, peer, gid string, id snowflake.ID) error {
	if s.media == nil || env.Type != wire.TypeMedia || env.Media == nil {
		return nil
	}
	if s.SentBefore(from, env.CID) {
		// A retry of a stored message, answered with the original, which
		// granted its media when it was stored. Granting it again as sent
		// by id, which no message will have, would keep the grant past
		// the retention of the only message that carries it (the grant
		// keeps the highest ID it was sent by: services/media/expire.go).
		return nil
	}
	err := s.media.AttachSent(ctx, from, env.Media, peer, gid, id)
	if errors.Is(err, wire.ErrMediaNotReady) {
		// Uploaded, or its processing finished, through another node a
		// moment ago? (Nothing was proposed before this refusal.)
		if err = s.catchUp(ctx, "media"); err == nil {
			err = s.media.AttachSent(ctx, from, env.Media, peer, gid, id)
		}
	}
	if err != nil {
		return fmt.Errorf("archive: media %q: %w", env.Media.ID, err)
	}
	return nil
}

// count records the outcome of a send.
func (s *Service) count(dup bool, err error) {
	switch {
	case err != nil:
		s.messages.WithLabelValues(resultRefused).Inc()
	case dup:
		s.messages.WithLabelValues(resultDuplicate).Inc()
	default:
		s.messages.WithLabelValues(resultStored).Inc()
		s.stored.Add(1)
	}
}

// StoredCount is the number of messages this process stored (sent
// through this node and committed, retries not counted) since it
// started; /admin/stats derives messages per second from it.
func (s *Service) StoredCount() uint64 { return s.stored.Load() }

// AsyncProposer is a Proposer that can also hand a command to the log
// now and wait for its result later (*cluster.Raft). Without it, start
// commits before it returns.
type AsyncProposer interface {
	ProposeAsync(ctx context.Context, t byte, payload []byte) func(context.Context) (any, error)
}

// start hands a stamped message to the log and returns the wait for
// what the handler stored: env and payload, or the original message of
// a retried cid. The wait counts the outcome.
func (s *Service) start(ctx context.Context, env wire.Envelope, payload []byte, cmd msgCmd) func(context.Context) (wire.Envelope, []byte, bool, error) {
	var wait func(context.Context) (any, error)
	encoded := cmd.encode()
	if ap, ok := s.prop.(AsyncProposer); ok {
		wait = ap.ProposeAsync(ctx, wire.CmdMessage, encoded)
	} else {
		v, err := s.prop.Propose(ctx, wire.CmdMessage, encoded)
		wait = func(context.Context) (any, error) { return v, err }
	}
	return func(ctx context.Context) (stored wire.Envelope, out []byte, dup bool, err error) {
		defer func() { s.count(dup, err) }()
		v, err := wait(ctx)
		// A leader change (leadership lost mid-commit, no leader yet, the
		// forward to the old leader cut) leaves the outcome unknown or the
		// command refused for now: propose the same command again for as
		// long as a failover takes (leaderChangeRetry, within the caller's
		// deadline) instead of failing the publish; longer is an outage
		// the client hears about. It is idempotent: the (sender, cid)
		// dedupe answers a second commit with the first, and the answer
		// names this very ID when the first attempt was the one that
		// committed.
		retried := false
		if err != nil && errors.Is(err, wire.ErrUnavailable) {
			retried = true
			rctx, cancel := context.WithTimeout(ctx, leaderChangeRetry)
			for backoff := 20 * time.Millisecond; err != nil && errors.Is(err, wire.ErrUnavailable) && rctx.Err() == nil; backoff = min(2*backoff, 400*time.Millisecond) {
				t := time.NewTimer(backoff)
				select {
				case <-rctx.Done():
				case <-t.C:
					s.retries.Inc()
					v, err = s.prop.Propose(rctx, wire.CmdMessage, encoded)
				}
				t.Stop()
			}
			cancel()
		}
		if err != nil {
			return wire.Envelope{}, nil, false, fmt.Errorf("archive: store message: %w", err)
		}
		if res, ok := v.(*applied); ok && retried && res.Dup && res.ID == env.ID && !res.expired {
			return env, payload, false, nil // our own earlier attempt committed: this is its answer
		}
		return s.storedResult(env, payload, v, cmd.CID == env.CID)
	}
}

// leaderChangeRetry is how long a message whose commit a leader change
// left unknown is proposed again: a failover takes about a second.
const leaderChangeRetry = 3 * time.Second

// storedResult turns the handler's result into what SendDirect answers.
// env is the message as sent (From, To and Group set). byCID: its
// dedupe key is the client's cid (a local client's send, not a link's
// message, whose key is its origin ID): an original of another
// conversation is then refused (reusedCID).
func (s *Service) storedResult(env wire.Envelope, payload []byte, v any, byCID bool) (wire.Envelope, []byte, bool, error) {
	res, ok := v.(*applied)
	if !ok {
		return wire.Envelope{}, nil, false, fmt.Errorf("archive: proposer returned %T, want the handler's result", v)
	}
	if !res.Dup {
		return env, payload, false, nil
	}
	if res.sealed != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		p, err := s.sealedMessage(ctx, res.sealed.Conv, res.sealed.ID)
		cancel()
		switch {
		case errors.Is(err, badger.ErrKeyNotFound):
			res = &applied{ID: res.ID, Dup: true, expired: true}
		case err != nil:
			return wire.Envelope{}, nil, false, fmt.Errorf("archive: stored message %d: %w", res.ID, err)
		default:
			res = &applied{ID: res.ID, Payload: p, Dup: true}
		}
	}
	if res.expired {
		// The original expired (retention): acknowledged as a duplicate,
		// not stored again; answered with its ID when it is known.
		env.ID = res.ID
		p, err := json.Marshal(env)
		return env, p, true, err
	}
	var orig wire.Envelope
	if err := json.Unmarshal(res.Payload, &orig); err != nil {
		return wire.Envelope{}, nil, false, fmt.Errorf("archive: stored message %d: %w", res.ID, err)
	}
	if byCID && (orig.To != env.To || orig.Group != env.Group) {
		return wire.Envelope{}, nil, false, reusedCID(env.CID, orig)
	}
	return orig, res.Payload, true, nil
}

// reusedCID refuses a local client's send whose cid the sender used
// before for a message of another conversation (orig, the message
// stored under it, names another recipient or group). A retry is the
// same message sent again and never changes conversation, so this is a
// new message under a reused cid (a client that counts cids per
// conversation): acknowledged as a retry, it would be lost while the
// client believes it sent. It is refused (wire.ErrInvalid: PUBACK 0x99,
// HTTP 400 invalid_envelope) so that the client sends it under a new
// cid; nothing is stored either way. An original that expired
// (retention) cannot be compared and is answered as a duplicate still.
func reusedCID(cid string, orig wire.Envelope) error {
	other := "to " + orig.To
	if orig.Group != "" {
		other = "in group " + orig.Group
	}
	return fmt.Errorf("archive: cid %q names your message %s %s: a new message needs a new cid: %w", cid, orig.ID, other, wire.ErrInvalid)
}

// MarkRead moves reader's read cursor in the conversation with peer
// forward to upTo (clamped to the conversation's highest message ID; it
// never moves back).
func (s *Service) MarkRead(ctx context.Context, reader, peer string, upTo snowflake.ID) error {
	_, err := s.MarkReadUpTo(ctx, reader, peer, upTo)
	return err
}

// MarkReadUpTo is MarkRead that also answers what the peer's read
// receipt may say: upTo, but at most the conversation's highest message
// ID (0: the conversation has no message, there is nothing to tell).
// The cursor is clamped so; a receipt with the upTo the reader wrote
// would tell the peer that messages not sent yet were read.
func (s *Service) MarkReadUpTo(ctx context.Context, reader, peer string, upTo snowflake.ID) (snowflake.ID, error) {
	peer, err := s.receiptPeer(reader, peer)
	if err != nil {
		return 0, err
	}
	if upTo == 0 {
		return 0, nil
	}
	cmd := cursorCmd{Reader: reader, Peer: peer, UpTo: upTo}
	v, err := s.prop.Propose(ctx, wire.CmdReadCursor, cmd.encode())
	if err != nil {
		return 0, fmt.Errorf("archive: mark read: %w", err)
	}
	// The cursor after the command: the clamped upTo when it moved,
	// else where it was (at or above the clamped upTo, at most the
	// highest message ID).
	switch r := v.(type) {
	case snowflake.ID:
		return min(upTo, r), nil
	case *cursorMoved:
		return min(upTo, r.UpTo), nil
	}
	return upTo, nil // a proposer that answers nothing (tests): as written
}

// receiptPeer checks a reader and the peer of a read cursor or receipt,
// and resolves the peer (bob@us: a conversation with a user of a linked
// region).
func (s *Service) receiptPeer(reader, peer string) (string, error) {
	if err := validUsers(reader); err != nil {
		return "", err
	}
	peer, err := s.resolvePeer(peer)
	if err != nil {
		return "", err
	}
	if err := wire.ValidPeerID(peer); err != nil {
		return "", fmt.Errorf("archive: user id %q: %w", peer, wire.ErrInvalid)
	}
	return peer, nil
}

// DeliveredUpTo is what a delivered receipt of reader to peer may say:
// upTo, but at most the conversation's newest message ID (0: the
// conversation has no message, there is nothing to tell), as
// MarkReadUpTo answers for a read receipt; a delivered receipt moves
// nothing. A receipt may name a message this node has not applied yet
// (the reader's device got it through another node): above this node's
// newest, the node catches up with the cluster first (and, when it
// cannot, answers from what it holds: the receipt is live only).
func (s *Service) DeliveredUpTo(ctx context.Context, reader, peer string, upTo snowflake.ID) (snowflake.ID, error) {
	peer, err := s.receiptPeer(reader, peer)
	if err != nil {
		return 0, err
	}
	top, err := s.newestIn(reader, peer)
	if err != nil || upTo <= top {
		return min(upTo, top), err
	}
	if s.catchUp(ctx, "delivered receipt") == nil {
		if top, err = s.newestIn(reader, peer); err != nil {
			return 0, err
		}
	}
	return min(upTo, top), nil
}

// newestIn is the highest message ID of the direct conversation between
// a and b (0: no message either way), where a read cursor stops.
func (s *Service) newestIn(a, b string) (top snowflake.ID, err error) {
	conv := directConv(a, b)
	err = s.db.View(func(tx *badger.Txn) error {
		p, found, _, err := keptPair(tx, a, b, conv)
		if err != nil {
			return err
		}
		top, err = clampToTop(tx, conv, ^snowflake.ID(0), p.LastID, found)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("archive: newest message: %w", err)
	}
	return top, nil
}

// MarkRemoteRead moves the read cursor that reader, a user of a linked
// region (bob@us), has in the conversation with peer, a user of this
// region, as the read receipt that crossed the link says (bridge/region):
// reader's own region keeps the cursor that counts (its unread counts);
// this one keeps the copy peer's conversation list shows as peerRead, so
// that peer's messages show read after a reload too. Clamped and only
// moving forward, as any read cursor.
func (s *Service) MarkRemoteRead(ctx context.Context, reader, peer string, upTo snowflake.ID) error {
	if err := validUsers(peer); err != nil {
		return err
	}
	r, err := s.resolvePeer(reader)
	if err != nil {
		return err
	}
	if strings.IndexByte(r, '@') < 0 {
		return fmt.Errorf("archive: %q is not a user of another region: %w", reader, wire.ErrInvalid)
	}
	if upTo == 0 {
		return nil
	}
	cmd := cursorCmd{Reader: r, Peer: peer, UpTo: upTo}
	if _, err := s.prop.Propose(ctx, wire.CmdReadCursor, cmd.encode()); err != nil {
		return fmt.Errorf("archive: mark read by %s: %w", r, err)
	}
	return nil
}

// HasConversation reports whether a direct conversation (at least one
// stored message, either way) exists between a and b. Group messages do
// not count.
func (s *Service) HasConversation(a, b string) bool {
	if wire.ValidPeerID(a) != nil || wire.ValidPeerID(b) != nil {
		return false // b may be a user of another region (bob@us)
	}
	var ok bool
	err := s.db.View(func(tx *badger.Txn) error {
		_, err := tx.Get(summaryKey(a, b))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		ok = err == nil
		return err
	})
	if err != nil {
		s.log.Error("conversation lookup failed", "a", a, "b", b, "err", err)
		return false
	}
	return ok
}

// HighestID returns the highest stored message ID (0 when there is none),
// for the ID generator's floor after a restart.
func (s *Service) HighestID() (snowflake.ID, error) {
	var id snowflake.ID
	err := s.db.View(func(tx *badger.Txn) error {
		var err error
		id, err = highestID(tx)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("archive: highest id: %w", err)
	}
	return id, nil
}
