package archive

import (
	"context"
	"encoding/binary"
	"fmt"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/internal/snowflake"
	"github.com/edgechat/edgechat/internal/wire"
)

// A sealed message keeps an m/{id} pointer to its conversation when the
// push outbox staged it (byIDWrites). Retention deletes a hot message's
// m/ key with it, but the FSM does not know the IDs inside a segment it
// drops: the leader, which reads the expiring sealed messages anyway
// (expiring), proposes wire.CmdRetentionPtrs with the IDs that have a
// pointer, and every node deletes those still pointing to the
// conversation. It is a command of its own so that a node of an earlier
// version skips it (unknown type) rather than the retention commands it
// does know: such a node keeps the pointers, which only name a message it
// no longer finds.

const ptrsVersion = 1

// retentionPtrsCmd is the payload of wire.CmdRetentionPtrs.
type retentionPtrsCmd struct {
	Conv   string
	Cutoff snowflake.ID
	IDs    []snowflake.ID // each below Cutoff
}

func (c *retentionPtrsCmd) encode() []byte {
	b := []byte{ptrsVersion}
	b = appendStr(b, c.Conv)
	b = binary.BigEndian.AppendUint64(b, uint64(c.Cutoff))
	b = binary.AppendUvarint(b, uint64(len(c.IDs)))
	for _, id := range c.IDs {
		b = binary.BigEndian.AppendUint64(b, uint64(id))
	}
	return b
}

func decodeRetentionPtrsCmd(b []byte) (retentionPtrsCmd, error) {
	bad := fmt.Errorf("%w: retention pointers", ErrBadCommand)
	rd, conv, cutoff, err := readRetentionHead(b, ptrsVersion, "retention pointers")
	if err != nil {
		return retentionPtrsCmd{}, err
	}
	c := retentionPtrsCmd{Conv: conv, Cutoff: cutoff}
	n, k := binary.Uvarint(rd.b)
	if k <= 0 || n > refsBatch || uint64(len(rd.b)-k) != 8*n {
		return retentionPtrsCmd{}, bad
	}
	rd.b = rd.b[k:]
	c.IDs = make([]snowflake.ID, 0, n)
	for range n {
		id := snowflake.ID(rd.u64())
		if id == 0 || id >= c.Cutoff {
			return retentionPtrsCmd{}, bad
		}
		c.IDs = append(c.IDs, id)
	}
	return c, nil
}

// ptrsApplied is the FSM's result of a CmdRetentionPtrs.
type ptrsApplied struct{ Deleted int }

// applyRetentionPtrs deletes the m/ key of each ID that still names the
// command's conversation (an ID reused by another conversation, or
// already gone, is left alone).
func applyRetentionPtrs(tx *badger.Txn, payload []byte) (any, error) {
	c, err := decodeRetentionPtrsCmd(payload)
	if err != nil {
		return nil, err
	}
	var del []snowflake.ID
	for _, id := range c.IDs { // every read before the first write
		conv, err := storedConv(tx, id)
		if err != nil {
			return nil, err
		}
		if conv == c.Conv {
			del = append(del, id)
		}
	}
	for _, id := range del {
		if err := tx.Delete(msgKey(id)); err != nil {
			return nil, err
		}
	}
	return &ptrsApplied{Deleted: len(del)}, nil
}

// expirePointers proposes the deletion of the m/ pointers of conv's
// expiring sealed messages (ids, below upTo), only of those that have one
// here (most have none), in batches.
func (s *Service) expirePointers(ctx context.Context, conv string, upTo snowflake.ID, ids []snowflake.ID, st *RetentionStats) error {
	var have []snowflake.ID
	if err := s.db.View(func(tx *badger.Txn) error {
		for _, id := range ids {
			if id >= upTo {
				continue
			}
			c, err := storedConv(tx, id)
			if err != nil {
				return err
			}
			if c == conv {
				have = append(have, id)
			}
		}
		return nil
	}); err != nil {
		return err
	}
	for len(have) > 0 {
		n := min(len(have), refsBatch)
		cmd := retentionPtrsCmd{Conv: conv, Cutoff: upTo, IDs: have[:n]}
		have = have[n:]
		v, err := s.prop.Propose(ctx, wire.CmdRetentionPtrs, cmd.encode())
		if err != nil {
			return fmt.Errorf("archive: retention of %s: message pointers: %w", conv, err)
		}
		st.Commands++
		if r, ok := v.(*ptrsApplied); ok {
			st.Pointers += r.Deleted
		}
	}
	return nil
}
