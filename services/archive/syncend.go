package archive

import (
	"bytes"
	"errors"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/internal/snowflake"
)

// syncEndWalk bounds the index entries syncEnd steps over, newest first,
// looking for where the messages created after a time begin. Past it the
// answer is the beginning of the stream: always complete, only slower to
// sync from.
const syncEndWalk = 10_000

// syncEndRemoteSkip bounds the messages of other regions older than the
// window that syncEnd's walk steps past (see walkBackTo); past it such a
// message ends the walk of its index, as any older message does.
const syncEndRemoteSkip = 2_000

// walkBudget is what is left of syncEnd's bounds, shared by its indexes.
type walkBudget struct {
	steps  int // entries (syncEndWalk)
	remote int // older messages of other regions stepped past (syncEndRemoteSkip)
}

// syncEnd returns a sync cursor for uid without reading the stream
// from its beginning (GET /chat/sync/end). With createdAfter zero it is
// where the stream ends now: a sync from it returns only what commits
// later. Otherwise a sync from it returns at least every message of the
// stream created after createdAfter, and maybe a few older ones: the
// stream follows commit order and IDs the clock of the node that made
// them, so each index is walked back past its first entry older than
// createdAfter by liveSkew. The stream is uid's own index (direct
// messages) merged with the groups uid is a member of now, as syncPage
// reads it.
func (s *Service) syncEnd(uid string, createdAfter time.Time) (uint64, error) {
	var cursor uint64
	err := s.db.View(func(tx *badger.Txn) error {
		// The groups once the snapshot is taken, as syncPage reads them.
		gids, err := s.groupsOf(uid)
		if err != nil {
			return err
		}
		if createdAfter.IsZero() {
			end, err := lastPosition(tx, syncPrefix(uid))
			if err != nil {
				return err
			}
			for _, gid := range gids {
				sum, found, err := getSummary(tx, groupSummaryKey(gid))
				if err != nil {
					return err
				}
				if found {
					end = max(end, sum.LastSeq)
				}
			}
			cursor = end
			return nil
		}
		prefixes := [][]byte{syncPrefix(uid)}
		convs := []string{""} // per prefix: a group's conversation
		for _, gid := range gids {
			prefixes = append(prefixes, groupSyncPrefix(gid))
			convs = append(convs, groupConv(gid))
		}
		stop := createdAfter.Add(-liveSkew)
		cursor = ^uint64(0)
		budget := walkBudget{steps: syncEndWalk, remote: syncEndRemoteSkip}
		for i, p := range prefixes {
			from, newer, err := walkBackTo(tx, p, convs[i], stop, &budget)
			if err != nil {
				return err
			}
			if newer {
				cursor = min(cursor, from)
			}
		}
		if cursor == ^uint64(0) { // nothing newer anywhere: the end
			end, err := lastPositions(tx, prefixes)
			if err != nil {
				return err
			}
			cursor = end
		}
		return nil
	})
	return cursor, err
}

// lastPosition is the position of the newest entry of a sync index, 0
// when it has none.
func lastPosition(tx *badger.Txn, prefix []byte) (uint64, error) {
	it := tx.NewIterator(badger.IteratorOptions{Prefix: prefix, Reverse: true})
	defer it.Close()
	it.Seek(withID(prefix, ^uint64(0)))
	if !it.ValidForPrefix(prefix) {
		return 0, nil
	}
	return tail8(it.Item().Key()), nil
}

func lastPositions(tx *badger.Txn, prefixes [][]byte) (uint64, error) {
	var end uint64
	for _, p := range prefixes {
		last, err := lastPosition(tx, p)
		if err != nil {
			return 0, err
		}
		end = max(end, last)
	}
	return end, nil
}

// walkBackTo walks a sync index from its newest entry back to the first
// one whose message was created before stop. newer reports whether any
// entry was created at or after stop; from is then the position to sync
// from to get them all: just before the oldest of them, or 0 when the
// walk spent the budget shared by every index. Both kinds of index (s/
// and gs/) start their value with the 8-byte ID; conv is a group's
// conversation for gs/ ("" for s/, whose value names the peer).
//
// A message of another region older than stop does not end the walk
// (up to budget.remote of them): it carries its region's ID, and a link
// delivers what queued up during an outage long after it was created,
// so its ID says nothing of when the entries before it committed. It
// only counts as newer when it is.
func walkBackTo(tx *badger.Txn, prefix []byte, conv string, stop time.Time, budget *walkBudget) (from uint64, newer bool, err error) {
	it := tx.NewIterator(badger.IteratorOptions{Prefix: prefix, Reverse: true, PrefetchValues: false})
	defer it.Close()
	for it.Seek(withID(prefix, ^uint64(0))); it.ValidForPrefix(prefix); it.Next() {
		if budget.steps <= 0 {
			return 0, true, nil
		}
		budget.steps--
		var id snowflake.ID
		var remote bool
		if err := it.Item().Value(func(v []byte) error {
			if len(v) >= 8 {
				id = snowflake.ID(tail8(v[:8]))
				remote = bytes.IndexByte(v[8:], '@') >= 0 // a direct peer of another region
			}
			return nil
		}); err != nil {
			return 0, false, err
		}
		if id.Time().Before(stop) {
			if budget.remote <= 0 {
				break
			}
			if conv != "" {
				if remote, err = remoteSender(tx, conv, id); err != nil {
					return 0, false, err
				}
			}
			if !remote {
				break
			}
			budget.remote--
			continue
		}
		newer, from = true, tail8(it.Item().Key())-1
	}
	return from, newer, nil
}

// remoteSender reports whether message id of group conversation conv
// was sent by a user of another region (false when it is not hot: a
// sealed message is old).
func remoteSender(tx *badger.Txn, conv string, id snowflake.ID) (bool, error) {
	item, err := tx.Get(convKey(conv, id))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	var remote bool
	err = item.Value(func(v []byte) error {
		from, _, _, _ := readBody(conv, id, v, false)
		remote = bytes.IndexByte(from, '@') >= 0
		return nil
	})
	return remote, err
}
