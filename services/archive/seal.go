package archive

import (
	"fmt"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/internal/snowflake"
	"github.com/edgechat/edgechat/services/archive/segment"
)

// sealRange reads the messages of conversation conv with IDs in
// [from, to], oldest first, at most limit of them, as a sealer puts them
// into a segment (issue 11): each one's history value in the compact
// form (see compactBody: the envelope without the head its ID and
// conversation give; expandSealed gives it back byte for byte),
// whichever layout it was stored in. It is the read half of sealing.
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
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			from, _, hasBody, ok := readBody(conv, id, v, false)
			if !ok {
				return fmt.Errorf("%w: history value of message %d", ErrBadCommand, id)
			}
			if !hasBody { // the older layout: v is the sender, the body is under m/
				body, err := loadMessage(tx, id)
				if err != nil {
					return err
				}
				v = compactOf(conv, id, string(from), body)
			}
			out = append(out, segment.Message{ID: uint64(id), Body: v})
		}
		return nil
	}()
	return out, err
}

// compactOf is the compact history value of a stored envelope of conv
// from sender.
func compactOf(conv string, id snowflake.ID, from string, env []byte) []byte {
	var to, group string
	if lo, hi := directUsers(conv); isGroupConv(conv) {
		group = conv[2:]
	} else if to = hi; from == hi {
		to = lo
	}
	kb := newKeyBuf(len(env) + 2 + len(from))
	return compactBody(&kb, env, id, from, to, group)
}

// expandSealed is the stored envelope of a sealed message from its
// segment body (a compact history value).
func expandSealed(conv string, id snowflake.ID, v []byte) ([]byte, error) {
	_, body, hasBody, ok := readBody(conv, id, v, true)
	if !ok || !hasBody {
		return nil, fmt.Errorf("%w: message %d of %s is not in a form a segment holds", ErrSegmentCorrupt, id, conv)
	}
	return body, nil
}
