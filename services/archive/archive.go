// Package archive is edgechat's durable message store: every direct
// message is committed through the Raft log and applied into Badger under
// r/arch/, with indexes for conversation history (newest first), a
// per-user sync stream in commit order (so a reconnecting client never
// misses a message even when node clocks disagree), conversation
// summaries with unread counts, read cursors, and deduplication of
// retried publishes by (sender, client message ID). It also offers the
// /chat HTTP endpoints: history, sync, conversations and sending.
//
// Writes go only through the Proposer and the FSM handlers registered by
// New; reads come straight from the local Badger.
//
// HTTP (Routes; every endpoint needs a principal; unknown or repeated
// query parameters are refused with 400 "validation_failed"):
//
//	GET  /chat/history?with={uid}&before={id}&limit={n}  newest first; limit 1..200 (50)
//	     {"messages":[envelope...],"hasMore":bool}; ?group={gid} is 404 until groups are archived
//	GET  /chat/sync?since={cursor}&limit={n}            oldest first in commit order; limit 1..1000 (500)
//	     {"messages":[...],"cursor":"...","hasMore":bool}; the cursor is opaque (today a
//	     decimal commit position); an empty since means from the beginning
//	GET  /chat/conversations?limit={n}                   latest activity first; limit 1..1000 (200)
//	     {"conversations":[{"peer","lastMessage","unread"}],"hasMore":bool}; unread is capped at 1000
//	POST /chat/messages                                  {"to", envelope fields}, at most 32 KiB;
//	     201 with the stored envelope, 200 with the original one for a retried cid
//
// Decisions: a read cursor only moves forward and is clamped to the
// conversation's newest message (so later messages still count as
// unread); a cursor for a conversation without messages is ignored.
// Dedupe entries are kept forever (a cid is unique per sender for good).
package archive

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"

	"github.com/dgraph-io/badger/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgechat/edgechat/broker/cluster/fsm"
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

// The ground-floor types the node wires in satisfy these interfaces.
var (
	_ Registrar = (*fsm.FSM)(nil)
	_ IDSource  = (*snowflake.Generator)(nil)
)

// Deps are the archive's collaborators. Logger and Registerer may be nil.
type Deps struct {
	DB         *badger.DB
	Proposer   Proposer
	FSM        Registrar
	Publisher  Publisher
	IDs        IDSource
	Users      Directory
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// ErrMissingDep is returned by New when a required dependency is nil.
var ErrMissingDep = errors.New("archive: missing dependency")

// Service is the archive.
type Service struct {
	db    *badger.DB
	prop  Proposer
	pub   Publisher
	ids   IDSource
	users Directory
	log   *slog.Logger

	messages *prometheus.CounterVec
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
		log: log.With("component", "archive"),
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgechat_archive_messages_total",
			Help: "Messages offered to the archive, by result (stored, duplicate, refused).",
		}, []string{"result"}),
	}
	for _, r := range []string{resultStored, resultDuplicate, resultRefused} {
		s.messages.WithLabelValues(r)
	}
	if deps.Registerer != nil {
		if err := deps.Registerer.Register(s.messages); err != nil {
			return nil, fmt.Errorf("archive: register metrics: %w", err)
		}
	}
	deps.FSM.Register(wire.CmdMessage, applyMessage)
	deps.FSM.Register(wire.CmdReadCursor, applyReadCursor)
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
// (clearing Group), commits the message through the Raft log and returns
// the stored envelope and its exact JSON (the bytes to deliver; do not
// re-encode). If (from, env.CID) was stored before, it returns that
// original message with dup=true and stores nothing. Errors wrap
// wire.ErrNotFound (no such recipient), wire.ErrInvalid or
// wire.ErrUnavailable.
func (s *Service) SendDirect(ctx context.Context, from, to string, env wire.Envelope) (stored wire.Envelope, payload []byte, dup bool, err error) {
	defer func() {
		switch {
		case err != nil:
			s.messages.WithLabelValues(resultRefused).Inc()
		case dup:
			s.messages.WithLabelValues(resultDuplicate).Inc()
		default:
			s.messages.WithLabelValues(resultStored).Inc()
		}
	}()
	if err := validUsers(from, to); err != nil {
		return wire.Envelope{}, nil, false, err
	}
	if env.CID == "" || len(env.CID) > wire.MaxCIDLen {
		return wire.Envelope{}, nil, false, fmt.Errorf("archive: cid: %w", wire.ErrInvalid)
	}
	ok, err := s.users.UserExists(to)
	if err != nil {
		return wire.Envelope{}, nil, false, fmt.Errorf("archive: looking up recipient %q: %w", to, err)
	}
	if !ok {
		return wire.Envelope{}, nil, false, fmt.Errorf("archive: recipient %q: %w", to, wire.ErrNotFound)
	}
	env.ID = s.ids.Next()
	env.From, env.To, env.Group = from, to, ""
	payload = env.Marshal()
	cmd := msgCmd{ID: env.ID, From: from, To: to, CID: env.CID, Payload: payload}
	v, err := s.prop.Propose(ctx, wire.CmdMessage, cmd.encode())
	if err != nil {
		return wire.Envelope{}, nil, false, fmt.Errorf("archive: store message: %w", err)
	}
	res, ok := v.(*applied)
	if !ok {
		return wire.Envelope{}, nil, false, fmt.Errorf("archive: proposer returned %T, want the handler's result", v)
	}
	if !res.Dup {
		return env, payload, false, nil
	}
	var orig wire.Envelope
	if err := json.Unmarshal(res.Payload, &orig); err != nil {
		return wire.Envelope{}, nil, false, fmt.Errorf("archive: stored message %d: %w", res.ID, err)
	}
	return orig, res.Payload, true, nil
}

// MarkRead moves reader's read cursor in the conversation with peer
// forward to upTo (clamped to the conversation's highest message ID; it
// never moves back).
func (s *Service) MarkRead(ctx context.Context, reader, peer string, upTo snowflake.ID) error {
	if err := validUsers(reader, peer); err != nil {
		return err
	}
	if upTo == 0 {
		return nil
	}
	cmd := cursorCmd{Reader: reader, Peer: peer, UpTo: upTo}
	if _, err := s.prop.Propose(ctx, wire.CmdReadCursor, cmd.encode()); err != nil {
		return fmt.Errorf("archive: mark read: %w", err)
	}
	return nil
}

// CanSeePresence reports whether viewer may see subject's presence: they
// are the same user or have a conversation.
func (s *Service) CanSeePresence(viewer, subject string) bool {
	if viewer == subject {
		return true
	}
	if validUsers(viewer, subject) != nil {
		return false
	}
	var ok bool
	err := s.db.View(func(tx *badger.Txn) error {
		_, err := tx.Get(summaryKey(viewer, subject))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		ok = err == nil
		return err
	})
	if err != nil {
		s.log.Error("presence visibility lookup failed", "viewer", viewer, "subject", subject, "err", err)
		return false
	}
	return ok
}

// HighestID returns the highest stored message ID (0 when there is none),
// for the ID generator's floor after a restart.
func (s *Service) HighestID() (snowflake.ID, error) {
	var id uint64
	err := s.db.View(func(tx *badger.Txn) error {
		var err error
		id, err = lastIndexed(tx, msgPrefix())
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("archive: highest id: %w", err)
	}
	return snowflake.ID(id), nil
}
