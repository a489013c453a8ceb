package users

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/internal/wire"
)

// Reverse indexes of the social graph, for erasing an account
// (erase.go) without reading every user's contacts and blocks: an erase
// step found the edges others hold towards the user by reading every
// key under r/user/c/ and r/user/b/, inside the FSM apply on every node.
//
//   - r/user/rc/{uid}/{owner}: r/user/c/{owner}/{uid} (owner lists uid)
//   - r/user/rb/{uid}/{owner}: r/user/b/{owner}/{uid} (owner blocks uid)
//
// Each is written and deleted with its edge by every handler of this
// version; an entry may outlive its edge (readers check). Edges made
// before this version are indexed by a walk the leader proposes in
// bounded steps (CmdUserIndex, RunIndex), whose last step marks the
// indexes complete (keyRelIndexed) on a node that applied its first step
// with this code (one upgraded halfway through a walk waits for the
// next). Until the mark an erase step reads every edge as before; either
// way it deletes the same edges in the same order with the same budget
// (fsm.DeleteKeys; index entries cost none), so nodes with and without
// the mark write the same primary keys.
const (
	prefixContactOf = "r/user/rc/"
	prefixBlockedBy = "r/user/rb/"
	keyRelIndexed   = "r/user/ix/done" // JSON time: the walk that completed the indexes here
	keyRelIndexWalk = "r/user/ix/walk" // JSON time: the walk this node indexed from its first step
)

// relIndexStepKeys bounds the edges one walk step reads.
const relIndexStepKeys = 2000

// relIndexEvery is how often the leader walks again once its own
// indexes are complete (for followers upgraded during a walk); it looks
// every relIndexLook whether it leads.
const (
	relIndexEvery = 24 * time.Hour
	relIndexLook  = 10 * time.Minute
)

// reverseOf is the reverse index of an edge prefix.
func reverseOf(prefix string) string {
	if prefix == prefixBlock {
		return prefixBlockedBy
	}
	return prefixContactOf
}

func reverseKey(prefix, owner, uid string) []byte {
	return []byte(reverseOf(prefix) + uid + "/" + owner)
}

// indexEdge indexes (or, !add, unindexes) the edge owner→uid under prefix.
func indexEdge(tx *badger.Txn, prefix, owner, uid string, add bool) error {
	if add {
		return tx.Set(reverseKey(prefix, owner, uid), nil)
	}
	return tx.Delete(reverseKey(prefix, owner, uid))
}

// unindexEdgeKeys drops the reverse entries of the edge keys ks under prefix.
func unindexEdgeKeys(tx *badger.Txn, prefix string, ks [][]byte) error {
	for _, k := range ks {
		owner, uid, ok := strings.Cut(string(k[len(prefix):]), "/")
		if !ok {
			continue
		}
		if err := indexEdge(tx, prefix, owner, uid, false); err != nil {
			return err
		}
	}
	return nil
}

func relIndexed(tx *badger.Txn) (bool, error) { return relIndex.Complete(tx) }

// relIndex marks the walk and the completion of the indexes here.
var relIndex = fsm.IndexMarks{Walk: []byte(keyRelIndexWalk), Done: []byte(keyRelIndexed)}

// deleteEdgesTowards deletes the edges under prefix towards uid through
// uid's reverse entries, as far as b goes, exactly as DeleteMatching over
// every edge under prefix did; it answers their owners, in key order.
func deleteEdgesTowards(tx *badger.Txn, prefix, uid string, b *fsm.Budget) (owners []string, done bool, err error) {
	rev := []byte(reverseOf(prefix) + uid + "/")
	var keys, stale [][]byte
	it := tx.NewIterator(badger.IteratorOptions{Prefix: rev})
	for it.Rewind(); it.Valid(); it.Next() {
		owner := string(it.Item().Key()[len(rev):])
		k := []byte(prefix + owner + "/" + uid)
		found, err := exists(tx, string(k))
		if err != nil {
			it.Close()
			return nil, false, err
		}
		if found {
			keys = append(keys, k)
		} else {
			stale = append(stale, it.Item().KeyCopy(nil))
		}
	}
	it.Close()
	for _, k := range stale {
		if err := tx.Delete(k); err != nil {
			return nil, false, err
		}
	}
	// Owners sort otherwise as themselves and in {owner}/{uid} ("al-x/"
	// before "al/"): DeleteKeys deletes in key order.
	deleted, done, err := fsm.DeleteKeys(tx, []byte(prefix), keys, b)
	if err != nil {
		return nil, false, err
	}
	for _, k := range deleted {
		owner, _, _ := strings.Cut(string(k[len(prefix):]), "/")
		owners = append(owners, owner)
	}
	return owners, done, unindexEdgeKeys(tx, prefix, deleted)
}

// relIndexCmd is one step of the walk (wire.CmdUserIndex): the edges
// under r/user/b/ then r/user/c/ after After (a whole key; "" from the
// start). Walk is the At of the walk's first step, in every step.
type relIndexCmd struct {
	V     int       `json:"v"`
	After string    `json:"after,omitempty"`
	Walk  time.Time `json:"walk"`
}

const relIndexCmdVersion = 1

// RelIndexStep is the value of a walk step: the key the next one starts
// after ("" when the walk is done).
type RelIndexStep struct{ Next string }

func (s *Service) applyRelIndex(tx *badger.Txn, _ fsm.Position, payload []byte) (any, error) {
	var c relIndexCmd
	if err := json.Unmarshal(payload, &c); err != nil {
		return nil, fmt.Errorf("%w: %v", errBadCommand, err)
	}
	if c.V != relIndexCmdVersion || c.Walk.IsZero() {
		return nil, fmt.Errorf("%w: relation index walk version %d", errBadCommand, c.V)
	}
	if c.After == "" {
		if err := relIndex.Begin(tx, c.Walk); err != nil {
			return nil, err
		}
	}
	type edge struct{ prefix, key string }
	var edges []edge
	seen, last, full := 0, "", false
	for _, p := range []string{prefixBlock, prefixContact} { // in key order
		if full {
			break
		}
		if c.After != "" && c.After >= p+"\xff" {
			continue // walked already
		}
		start := []byte(p)
		if c.After > p {
			start = []byte(c.After + "\x00")
		}
		it := tx.NewIterator(badger.IteratorOptions{Prefix: []byte(p)})
		for it.Seek(start); it.Valid(); it.Next() {
			if seen == relIndexStepKeys {
				full = true
				break
			}
			seen++
			last = string(it.Item().Key())
			edges = append(edges, edge{p, last})
		}
		it.Close()
	}
	for _, e := range edges {
		owner, uid, ok := strings.Cut(e.key[len(e.prefix):], "/")
		if !ok {
			continue
		}
		k := reverseKey(e.prefix, owner, uid)
		if found, err := exists(tx, string(k)); err != nil {
			return nil, err
		} else if !found {
			if err := tx.Set(k, nil); err != nil {
				return nil, err
			}
		}
	}
	if full {
		return RelIndexStep{Next: last}, nil
	}
	return RelIndexStep{}, relIndex.End(tx, c.Walk)
}

// IndexRelations walks every contact and block once, step by step,
// indexing those made before the reverse indexes.
func (s *Service) IndexRelations(ctx context.Context) error {
	walk := s.now().UTC()
	after := ""
	for {
		b, err := json.Marshal(relIndexCmd{V: relIndexCmdVersion, After: after, Walk: walk})
		if err != nil {
			return err
		}
		v, err := s.proposer.Propose(ctx, wire.CmdUserIndex, b)
		if err != nil {
			return fmt.Errorf("users: relation index walk: %w", err)
		}
		step, ok := v.(RelIndexStep)
		if !ok {
			return fmt.Errorf("users: relation index walk: unexpected result %T", v)
		}
		if step.Next == "" {
			return nil
		}
		after = step.Next
	}
}

// Leadership says whether this node is the Raft leader (the one node
// that proposes the walk).
type Leadership interface{ IsLeader() bool }

// RunIndex walks (IndexRelations) while this node leads: until its own
// indexes are complete, then every relIndexEvery, until ctx ends. It
// first looks relIndexLook after the start (no walk while a cluster
// starts).
func (s *Service) RunIndex(ctx context.Context, lead Leadership) error {
	var last time.Time
	timer := time.NewTimer(relIndexLook)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		}
		timer.Reset(relIndexLook)
		if !lead.IsLeader() {
			continue
		}
		done := false
		_ = s.db.View(func(tx *badger.Txn) error {
			var err error
			done, err = relIndexed(tx)
			return err
		})
		now := s.now()
		switch {
		case done && last.IsZero():
			last = now // complete here: the next walk in relIndexEvery
			continue
		case done && now.Sub(last) < relIndexEvery:
			continue
		}
		if err := s.IndexRelations(ctx); err != nil {
			if ctx.Err() == nil && !errors.Is(err, context.Canceled) {
				s.log.Warn("indexing contacts and blocks; an account erasure reads every user's until it is done", "err", err)
			}
			continue
		}
		last = now
	}
}
