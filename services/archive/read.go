package archive

import (
	"cmp"
	"errors"
	"fmt"
	"slices"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/internal/snowflake"
)

// Page sizes.
const (
	historyDefault       = 50
	historyMax           = 200
	syncDefault          = 500
	syncMax              = 1000
	conversationsDefault = 200
	conversationsMax     = 1000
	// unreadCap bounds the unread count of one conversation ("1000" means
	// "1000 or more"), so listing conversations stays cheap for a user
	// who never reads.
	unreadCap = 1000
)

// scanIDs collects up to n trailing numbers of keys under prefix,
// starting at seek, in the iterator's direction.
func scanIDs(tx *badger.Txn, prefix, seek []byte, reverse bool, n int) []uint64 {
	it := tx.NewIterator(badger.IteratorOptions{Prefix: prefix, Reverse: reverse})
	defer it.Close()
	var out []uint64
	for it.Seek(seek); it.ValidForPrefix(prefix) && len(out) < n; it.Next() {
		out = append(out, tail8(it.Item().Key()))
	}
	return out
}

func loadMessage(tx *badger.Txn, id snowflake.ID) ([]byte, error) {
	it, err := tx.Get(msgKey(id))
	if err != nil {
		return nil, fmt.Errorf("archive: message %d: %w", id, err)
	}
	return it.ValueCopy(nil)
}

// historyPage returns up to limit messages of a conversation with IDs
// below before (all when before is nil), newest first.
func (s *Service) historyPage(conv string, before *snowflake.ID, limit int) (msgs [][]byte, hasMore bool, err error) {
	prefix := convPrefix(conv)
	seek := append(append([]byte{}, prefix...), 0xff)
	if before != nil {
		if *before == 0 {
			return nil, false, nil
		}
		seek = withID(prefix, uint64(*before)-1)
	}
	err = s.db.View(func(tx *badger.Txn) error {
		ids := scanIDs(tx, prefix, seek, true, limit+1)
		if len(ids) > limit {
			hasMore, ids = true, ids[:limit]
		}
		msgs = make([][]byte, 0, len(ids))
		for _, id := range ids {
			m, err := loadMessage(tx, snowflake.ID(id))
			if err != nil {
				return err
			}
			msgs = append(msgs, m)
		}
		return nil
	})
	return msgs, hasMore, err
}

// syncPage returns up to limit messages for uid committed after the
// position since, in commit order, and the position of the last one
// (since itself when there is none).
func (s *Service) syncPage(uid string, since uint64, limit int) (msgs [][]byte, next uint64, hasMore bool, err error) {
	prefix := syncPrefix(uid)
	next = since
	if since == ^uint64(0) {
		return nil, next, false, nil
	}
	err = s.db.View(func(tx *badger.Txn) error {
		it := tx.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		for it.Seek(withID(prefix, since+1)); it.ValidForPrefix(prefix); it.Next() {
			if len(msgs) == limit {
				hasMore = true
				return nil
			}
			item := it.Item()
			var id snowflake.ID
			if err := item.Value(func(v []byte) error {
				if len(v) != 8 {
					return fmt.Errorf("%w: sync entry of %d bytes", ErrBadCommand, len(v))
				}
				id = snowflake.ID(tail8(v))
				return nil
			}); err != nil {
				return err
			}
			m, err := loadMessage(tx, id)
			if err != nil {
				return err
			}
			msgs = append(msgs, m)
			next = tail8(item.Key())
		}
		return nil
	})
	return msgs, next, hasMore, err
}

// conversation is one entry of the conversation list.
type conversation struct {
	Peer    string
	Last    []byte // the envelope JSON of the conversation's newest message
	Unread  int
	lastSeq uint64
}

// conversations lists uid's conversations, latest activity first.
func (s *Service) conversations(uid string, limit int) (out []conversation, hasMore bool, err error) {
	err = s.db.View(func(tx *badger.Txn) error {
		prefix := summaryPrefix(uid)
		var all []conversation
		var sums []summary
		it := tx.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: true, PrefetchSize: 100})
		for it.Seek(prefix); it.ValidForPrefix(prefix); it.Next() {
			item := it.Item()
			var sum summary
			var ok bool
			if err := item.Value(func(v []byte) error { sum, ok = decodeSummary(v); return nil }); err != nil {
				it.Close()
				return err
			}
			if !ok {
				continue
			}
			all = append(all, conversation{Peer: string(item.Key()[len(prefix):]), lastSeq: sum.LastSeq})
			sums = append(sums, sum)
		}
		it.Close()
		order := make([]int, len(all))
		for i := range order {
			order[i] = i
		}
		slices.SortFunc(order, func(a, b int) int {
			return cmp.Or(cmp.Compare(all[b].lastSeq, all[a].lastSeq), cmp.Compare(all[a].Peer, all[b].Peer))
		})
		if len(order) > limit {
			hasMore, order = true, order[:limit]
		}
		out = make([]conversation, 0, len(order))
		for _, i := range order {
			c := all[i]
			var err error
			if c.Last, err = loadMessage(tx, sums[i].LastID); err != nil {
				return err
			}
			if c.Unread, err = unread(tx, uid, c.Peer); err != nil {
				return err
			}
			out = append(out, c)
		}
		return nil
	})
	return out, hasMore, err
}

// unread counts the messages uid received from peer with IDs above uid's
// read cursor, up to unreadCap.
func unread(tx *badger.Txn, uid, peer string) (int, error) {
	cur, _, err := getID(tx, cursorKey(uid, directConv(uid, peer)))
	if err != nil && !errors.Is(err, badger.ErrKeyNotFound) {
		return 0, err
	}
	if cur == ^snowflake.ID(0) {
		return 0, nil
	}
	prefix := inboxPrefix(uid, peer)
	it := tx.NewIterator(badger.IteratorOptions{Prefix: prefix})
	defer it.Close()
	n := 0
	for it.Seek(withID(prefix, uint64(cur)+1)); it.ValidForPrefix(prefix) && n < unreadCap; it.Next() {
		n++
	}
	return n, nil
}
