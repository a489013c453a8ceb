package archive

import (
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/internal/snowflake"
)

// syncEndWalk bounds the index entries syncEnd steps over, newest first,
// looking for where the messages created after a time begin. Past it the
// answer is the beginning of the stream: always complete, only slower to
// sync from.
const syncEndWalk = 10_000

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
	gids, err := s.groupsOf(uid)
	if err != nil {
		return 0, err
	}
	var cursor uint64
	err = s.db.View(func(tx *badger.Txn) error {
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
		for _, gid := range gids {
			prefixes = append(prefixes, groupSyncPrefix(gid))
		}
		stop := createdAfter.Add(-liveSkew)
		cursor = ^uint64(0)
		budget := syncEndWalk
		for _, p := range prefixes {
			from, newer, err := walkBackTo(tx, p, stop, &budget)
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
// and gs/) start their value with the 8-byte ID.
func walkBackTo(tx *badger.Txn, prefix []byte, stop time.Time, budget *int) (from uint64, newer bool, err error) {
	it := tx.NewIterator(badger.IteratorOptions{Prefix: prefix, Reverse: true, PrefetchValues: false})
	defer it.Close()
	for it.Seek(withID(prefix, ^uint64(0))); it.ValidForPrefix(prefix); it.Next() {
		if *budget <= 0 {
			return 0, true, nil
		}
		*budget--
		var id snowflake.ID
		if err := it.Item().Value(func(v []byte) error {
			if len(v) >= 8 {
				id = snowflake.ID(tail8(v[:8]))
			}
			return nil
		}); err != nil {
			return 0, false, err
		}
		if id.Time().Before(stop) {
			break
		}
		newer, from = true, tail8(it.Item().Key())-1
	}
	return from, newer, nil
}
