package node

import (
	"context"
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"
	"github.com/hashicorp/raft"
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

// CompactStorage compacts Badger's tables into one level, as its
// compactors do over time, so that deleted keys stop taking space.
func CompactStorage(n *Node) error { return n.db.Flatten(2) }
