package users

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"
)

// Link sequence numbers (issue 14): a link sends its outbox again from
// its cursor after a failed commit, a lost PUBACK or a reconnect, so a
// group's state and a member's leave may arrive more than once, after
// newer ones. Messages are deduplicated by their origin IDs; a state or a
// leave has none, and applied again it turned a mirror back to an older
// state (members removed and added again, their subscriptions dropped) or
// removed a member the home had added again since. Each carries its place
// in the sending region's outbox for this region (seq, from 1; 0: a peer
// of an earlier version, applied as before), which grows along the link;
// the last one applied is kept, in the same transaction as its effects,
// and anything at or below it is a resend and skipped.
const (
	// prefixMirrorSeq keys the seq of the last state (or chunk) applied to
	// a mirror: gid@home → 8 bytes. Kept when the mirror goes (a resent
	// older state must not bring it back).
	prefixMirrorSeq = "r/user/gs/"
	// prefixLeaveSeq keys the seq of the last leave a region's link
	// brought: region → 8 bytes.
	prefixLeaveSeq = "r/user/ls/"
)

// seqSeen tells whether seq (not 0) is at or below the one key holds.
func seqSeen(tx *badger.Txn, key string, seq uint64) (bool, error) {
	it, err := tx.Get([]byte(key))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	var last uint64
	if err := it.Value(func(v []byte) error {
		if len(v) != 8 {
			return fmt.Errorf("%w: %q holds %d bytes", errBadCommand, key, len(v))
		}
		last = binary.BigEndian.Uint64(v)
		return nil
	}); err != nil {
		return false, err
	}
	return seq <= last, nil
}

func setSeq(tx *badger.Txn, key string, seq uint64) error {
	return tx.Set([]byte(key), binary.BigEndian.AppendUint64(nil, seq))
}

// appliedLeaves reads the seq of the last leave each region's link
// brought (region → seq), for a group's state (RemoteGroup.Leaves):
// never nil.
func appliedLeaves(tx *badger.Txn) (map[string]uint64, error) {
	out := map[string]uint64{}
	_, err := scan(tx, prefixLeaveSeq, "", "", true, func(region string, v []byte) (bool, error) {
		if len(v) == 8 {
			out[region] = binary.BigEndian.Uint64(v)
		}
		return false, nil
	})
	return out, err
}
