package archive

import (
	"fmt"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/internal/snowflake"
	"github.com/edgechat/edgechat/services/archive/segment"
)

// sealRange reads the messages of conversation conv with IDs in
// [from, to], oldest first, at most limit of them, as a sealer puts them
// into a segment (issue 11): each one's stored envelope exactly as
// history serves it, whichever layout it was stored in. It is the read
// half of sealing.
func (s *Service) sealRange(conv string, from, to snowflake.ID, limit int) ([]segment.Message, error) {
	if from > to || limit <= 0 {
		return nil, nil
	}
	var out []segment.Message
	err := s.db.View(func(tx *badger.Txn) error {
		var err error
		out, err = sealRangeTx(tx, conv, from, to, limit)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("archive: seal range of %s: %w", conv, err)
	}
	return out, nil
}

// sealRangeTx is sealRange within a transaction (the FSM checks a seal
// with it).
func sealRangeTx(tx *badger.Txn, conv string, from, to snowflake.ID, limit int) ([]segment.Message, error) {
	if from > to || limit <= 0 {
		return nil, nil
	}
	prefix := convPrefix(conv)
	var out []segment.Message
	err := func() error {
		it := tx.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		for it.Seek(withID(prefix, uint64(from))); it.ValidForPrefix(prefix) && len(out) < limit; it.Next() {
			id := snowflake.ID(tail8(it.Item().Key()))
			if id > to {
				break
			}
			body, err := bodyOf(it.Item(), conv, id)
			if err != nil {
				return err
			}
			if body == nil { // the older layout: the body is under m/
				if body, err = loadMessage(tx, id); err != nil {
					return err
				}
			}
			out = append(out, segment.Message{ID: uint64(id), Body: body})
		}
		return nil
	}()
	return out, err
}
