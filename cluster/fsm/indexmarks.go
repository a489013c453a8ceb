package fsm

import (
	"errors"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// IndexMarks are the bookkeeping of an index built over data written
// before the index existed: the data written since is indexed by its
// handlers, the older data by a walk the leader proposes in bounded
// steps, each step carrying the walk's start time. A node that applied
// the walk's first step with the indexing code records that time (Walk);
// the walk's last step marks the index complete (Done) only on such a
// node: one upgraded halfway through a walk indexed nothing of the part
// walked before it, so it marks nothing and waits for the next walk.
// Until Done, readers scan the data as before the index; either way they
// must find the same keys, so that nodes with and without the mark write
// the same.
type IndexMarks struct {
	Walk []byte // JSON time: the walk this node indexed from its first step
	Done []byte // JSON time: the walk that completed the index here
}

// Begin records walk as the walk this node indexes from its first step
// (a zero walk, from a proposer of an earlier version, records nothing).
func (m IndexMarks) Begin(tx *badger.Txn, walk time.Time) error {
	if walk.IsZero() {
		return nil
	}
	return SetJSON(tx, m.Walk, walk)
}

// End ends walk (its last step): the index is complete if this node
// began walk.
func (m IndexMarks) End(tx *badger.Txn, walk time.Time) error {
	if walk.IsZero() {
		return nil
	}
	var began time.Time
	found, err := GetJSON(tx, m.Walk, &began)
	if err != nil || !found || !began.Equal(walk) {
		return err
	}
	if done, err := m.Complete(tx); err != nil || done {
		return err
	}
	return SetJSON(tx, m.Done, walk)
}

// Complete reports whether the index is complete on this node.
func (m IndexMarks) Complete(tx *badger.Txn) (bool, error) {
	_, err := tx.Get(m.Done)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return false, nil
	}
	return err == nil, err
}
