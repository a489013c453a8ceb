package node

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/dgraph-io/badger/v4"
	"github.com/hashicorp/raft"

	"github.com/edgechat/edgechat/cluster/fsm"
)

// SettleStorage does now what a node running for a while does on its
// timers: it takes a Raft snapshot (which truncates the log) and runs
// Badger's value-log GC until there is nothing to rewrite. The disk
// benchmark measures the footprint after it.
func SettleStorage(ctx context.Context, n *Node) error {
	if err := Snapshot(ctx, n); err != nil {
		return err
	}
	for {
		err := n.db.RunValueLogGC(0.5)
		if errors.Is(err, badger.ErrNoRewrite) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("value log gc: %w", err)
		}
	}
}

// Snapshot takes a Raft snapshot now, as the node's timer does; nothing
// new to snapshot is not an error.
func Snapshot(ctx context.Context, n *Node) error {
	if err := n.raft.Snapshot(ctx); err != nil && !errors.Is(err, raft.ErrNothingNewToSnapshot) {
		return err
	}
	return nil
}

// CompactStorage writes Badger's memtables out and compacts its tables
// into one level, as its compactors do over time, so that deleted keys
// stop taking space. (DropPrefix of a prefix no key has is Badger's way
// to flush the memtables on demand, given a key to drop.)
func CompactStorage(n *Node) error {
	flush := []byte("l/test-flush/")
	if err := n.db.Update(func(tx *badger.Txn) error { return tx.Set(flush, nil) }); err != nil {
		return err
	}
	if err := n.db.DropPrefix(flush); err != nil {
		return err
	}
	return n.db.Flatten(2)
}

// HoldApply makes the node's FSM wait before it applies anything more,
// until release is called (a leader whose apply falls behind a
// follower's).
func HoldApply(n *Node) (release func()) { return n.fsm.HoldApply() }

// HoldApplyFrom holds n's FSM from the first entry with a command of
// type t on (fsm.HoldApplyFrom).
func HoldApplyFrom(n *Node, t byte) (release func()) { return n.fsm.HoldApplyFrom(t) }

// Propose commits a raw command through n's Raft, as a service would:
// tests use it to stand for a request whose change committed while its
// client and handler gave up (nothing after the commit ran).
func Propose(ctx context.Context, n *Node, t byte, payload []byte) (any, error) {
	return n.raft.Propose(ctx, t, payload)
}

// KnowsMemberAddr tells whether n takes addr for an address of the
// member named name: its gateway then does not rate-limit that member's
// own requests (those naming it in X-Edgechat-Peer).
func KnowsMemberAddr(n *Node, addr, name string) bool {
	return n.members.Has(netip.MustParseAddr(addr), name)
}

// FeatureLevelChecks is how many checks of the members' feature levels
// n made as leader with every member answering.
func FeatureLevelChecks(n *Node) int64 { return n.featureChecks.Load() }

// FSMHandler is the node's FSM handler of command type t (nil: none),
// with the database it applies into.
func FSMHandler(n *Node, t byte) (fsm.Handler, *badger.DB) { return n.fsm.Handler(t), n.db }
