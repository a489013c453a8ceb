// Package featurelevel is the cluster's feature level, the way etcd has
// a cluster version: a replicated number that says which changes of the
// replicated state's rules every member takes, so that nodes of two
// versions in a rolling upgrade never disagree on the state.
//
// A change that makes an FSM handler accept what it refused before (a
// name with a zero-width joiner) cannot simply ship: a node of the
// earlier version applying the same command refuses it, and the nodes'
// states part. Such a change is tied to a level instead: handlers accept
// it only when the level committed in the same transaction is high
// enough, and the Raft leader raises the level (wire.CmdFeatureLevel)
// once every member of the configuration says it supports it (node's
// Edge.Info; a node of an earlier version says nothing: level 0). A node
// of a version that knows no feature level skips the command (unknown
// types are skipped), but it is never in the configuration when the
// level is raised. The level never goes down.
//
// Levels:
//
//	0  (no record) the rules of every version
//	1  Joiners: display names and group names take U+200C and U+200D;
//	   LeaveSeqs: a member's leave of a group of another region stays
//	   pending until the home's state tells it applied it (the state's
//	   leaves, services/users groups_leave.go). The leave rule came with
//	   the version that brought feature levels (52a6f19), whose nodes
//	   apply it at any level: from level 1 every member runs such a
//	   version; below it a node of an earlier version may be one, and
//	   every node keeps the earlier rule (the pending leave ends with the
//	   first state without the member, and a home's states tell no
//	   leaves)
//	2  ArchiveOwner: wire.CmdArchiveOwner gives the cluster the owner ID
//	   that marks its objects in a shared archive store
//	3  FirstAdminOnce: only the first account a cluster ever has is made
//	   an admin, not the first made after every account was erased
//	   (services/auth firstAccount); ErasedAuthRecords: an account's
//	   erasure also deletes its sign-out, suspension and admin role
//	   revocation records (services/auth applyAccountErase)
//	4  ExpiredUndeliverable: a message --link-retention dropped from a
//	   region link's outbox is marked undeliverable, reason "expired"
//	   (services/archive applyUndeliverable), and its sender told
package featurelevel

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/internal/wire"
)

const (
	// Joiners: display names and group names may hold the zero-width
	// non-joiner and joiner (wire.CheckName).
	Joiners uint32 = 1
	// ArchiveOwner: the archive's owner ID can be set (services/archive,
	// owner.go), so that clusters sharing an archive bucket tell their
	// own objects from the others'.
	ArchiveOwner uint32 = 2
	// LeaveSeqs: pending leaves of groups of other regions keep their
	// seq on the link and end when the home's state tells the leave
	// applied; a home's group states tell the leaves it applied. Level
	// 1, as Joiners: the versions that know feature levels all apply
	// this rule, whatever the level, so a higher one would part them
	// from this one.
	LeaveSeqs = Joiners
	// FirstAdminOnce: a new account is the admin only when no account
	// was ever made here (none exists and none was erased), not when
	// every one was erased (services/auth, firstAccount).
	FirstAdminOnce uint32 = 3
	// ErasedAuthRecords: the last step of an account's erasure deletes
	// the user's records under r/auth/signedout/, r/auth/suspended/ and
	// r/auth/demoted/ too (services/auth, applyAccountErase). Level 3,
	// as FirstAdminOnce: both came with one version.
	ErasedAuthRecords = FirstAdminOnce
	// ExpiredUndeliverable: CmdUndeliverable takes the reason "expired"
	// (a message the region link's --link-retention dropped), which a
	// node of an earlier version refuses.
	ExpiredUndeliverable uint32 = 4
	// Supported is the highest level this version implements.
	Supported = ExpiredUndeliverable
)

// Key is where the committed level is kept (big-endian uint32; absent: 0).
var Key = []byte("r/sys/featurelevel")

var errBadCommand = errors.New("featurelevel: malformed command")

// Read is the level committed in tx's view: handlers call it to apply
// the rules of the level of their own entry's place in the log.
func Read(tx *badger.Txn) (uint32, error) {
	it, err := tx.Get(Key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var level uint32
	err = it.Value(func(v []byte) error {
		if len(v) != 4 {
			return fmt.Errorf("featurelevel: bad value of %d bytes", len(v))
		}
		level = binary.BigEndian.Uint32(v)
		return nil
	})
	return level, err
}

// Of is the level committed on this node (0 when it cannot be read): for
// checks made before proposing, whose command's handler checks again.
func Of(db *badger.DB) uint32 {
	var level uint32
	_ = db.View(func(tx *badger.Txn) error {
		var err error
		level, err = Read(tx)
		return err
	})
	return level
}

// JoinersIn tells whether names may hold joiners in tx's view.
func JoinersIn(tx *badger.Txn) (bool, error) {
	l, err := Read(tx)
	return l >= Joiners, err
}

// AtLeast tells whether the level in tx's view is level or above.
func AtLeast(tx *badger.Txn, level uint32) (bool, error) {
	l, err := Read(tx)
	return l >= level, err
}

// Payload is the command raising the level to level.
func Payload(level uint32) []byte { return binary.BigEndian.AppendUint32(nil, level) }

// State is the level on one node, kept in memory (the node's status,
// the leader's check) and updated as entries commit.
type State struct {
	db *badger.DB
	v  atomic.Uint32
}

// Register installs the handler of wire.CmdFeatureLevel on f and returns
// the level kept in memory.
func Register(f *fsm.FSM) *State {
	s := &State{db: f.DB()}
	s.v.Store(Of(s.db))
	f.Register(wire.CmdFeatureLevel, s.apply)
	f.OnRestore(func() { s.v.Store(Of(s.db)) })
	return s
}

// Level is the committed level as this node applied it.
func (s *State) Level() uint32 { return s.v.Load() }

type raised struct {
	s     *State
	level uint32
}

func (r raised) AfterCommit() { r.s.v.Store(r.level) }

// apply raises the level; a lower or equal one changes nothing. Its
// value is the level in force after it (uint32 through AfterCommit).
func (s *State) apply(tx *badger.Txn, _ fsm.Position, payload []byte) (any, error) {
	if len(payload) != 4 {
		return nil, fmt.Errorf("%w: %d bytes", errBadCommand, len(payload))
	}
	want := binary.BigEndian.Uint32(payload)
	cur, err := Read(tx)
	if err != nil {
		return nil, err
	}
	if want <= cur {
		return raised{s, cur}, nil
	}
	if err := tx.Set(Key, Payload(want)); err != nil {
		return nil, err
	}
	return raised{s, want}, nil
}

// Value is the level a proposal's value carries (ok false when it is
// not one: a forwarded proposal's value does not survive the trip).
func Value(v any) (uint32, bool) {
	r, ok := v.(raised)
	return r.level, ok
}
