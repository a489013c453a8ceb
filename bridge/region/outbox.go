package region

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/internal/address"
	"github.com/edgechat/edgechat/internal/wire"
)

// The link outboxes are replicated state, written only by FSM handlers:
//
//	r/rgn/o/{region}/{pos}  → the stored envelope of a message to a user of region (8-byte big-endian pos)
//	r/rgn/n/{region}        → the next free position of region's outbox
//	r/rgn/c/{region}        → the position up to which region acknowledged (the link's cursor)
//	r/rgn/x/{region}        → how many entries at or above the cursor were deleted (expired messages behind an entry that is not one; ops.go)
//
// A message to name@region is staged at the next position inside the
// archive's transaction that stores it (so it commits with it, in commit
// order); CmdRegionCursor moves the cursor after the other region's
// PUBACK and deletes what lies below it. Positions start at 0. The
// outbox may have holes above the cursor (CmdRegionExpire): readers seek
// by position.
const (
	prefixOut    = "r/rgn/o/"
	prefixNext   = "r/rgn/n/"
	prefixCursor = "r/rgn/c/"
	prefixHoles  = "r/rgn/x/"
)

func outPrefix(region string) []byte { return []byte(prefixOut + region + "/") }
func outKey(region string, pos uint64) []byte {
	return binary.BigEndian.AppendUint64(outPrefix(region), pos)
}
func nextKey(region string) []byte   { return []byte(prefixNext + region) }
func cursorKey(region string) []byte { return []byte(prefixCursor + region) }
func holesKey(region string) []byte  { return []byte(prefixHoles + region) }

// setHoles writes region's count of holes above the cursor (none: no key).
func setHoles(tx *badger.Txn, region string, n uint64) error {
	if n == 0 {
		return tx.Delete(holesKey(region))
	}
	return setU64(tx, holesKey(region), n)
}

func getU64(tx *badger.Txn, key []byte) (uint64, bool, error) {
	it, err := tx.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	var v uint64
	err = it.Value(func(b []byte) error {
		if len(b) != 8 {
			return fmt.Errorf("region: %q holds %d bytes, want 8", key, len(b))
		}
		v = binary.BigEndian.Uint64(b)
		return nil
	})
	return v, err == nil, err
}

func setU64(tx *badger.Txn, key []byte, v uint64) error {
	return tx.Set(key, binary.BigEndian.AppendUint64(nil, v))
}

// stage puts a direct message to a user of another region (to is
// name@region) in that region's outbox. It runs inside the FSM's
// transaction of the message on every node, so it reads and writes only
// replicated keys and decides from its arguments alone (not from the
// node's link configuration, which could differ between nodes).
func stage(tx *badger.Txn, to string, payload []byte) (region string, err error) {
	region = address.RegionOf(to)
	if region == "" {
		return "", nil
	}
	if address.ValidRegion(region) != nil {
		return "", fmt.Errorf("region: stage: recipient %q", to)
	}
	return region, stageRegion(tx, region, payload)
}

// stageRegion appends payload to region's outbox.
func stageRegion(tx *badger.Txn, region string, payload []byte) error {
	pos, _, err := getU64(tx, nextKey(region))
	if err != nil {
		return err
	}
	if err := tx.Set(outKey(region, pos), append([]byte(nil), payload...)); err != nil {
		return err
	}
	return setU64(tx, nextKey(region), pos+1)
}

// cursorCmd is CmdRegionCursor's payload: uvarint-length region, then
// the 8-byte position acknowledged (everything below it was).
type cursorCmd struct {
	Region string
	Pos    uint64
}

func (c cursorCmd) encode() []byte {
	b := binary.AppendUvarint(nil, uint64(len(c.Region)))
	b = append(b, c.Region...)
	return binary.BigEndian.AppendUint64(b, c.Pos)
}

func decodeCursorCmd(b []byte) (cursorCmd, error) {
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)-k) || uint64(len(b)-k)-n != 8 {
		return cursorCmd{}, errors.New("region: malformed cursor command")
	}
	c := cursorCmd{Region: string(b[k : k+int(n)]), Pos: binary.BigEndian.Uint64(b[k+int(n):])}
	if address.ValidRegion(c.Region) != nil {
		return cursorCmd{}, fmt.Errorf("region: cursor command for region %q", c.Region)
	}
	return c, nil
}

// applyCursor moves a link's cursor forward (never back, never past the
// outbox's end) and deletes the acknowledged entries.
func applyCursor(tx *badger.Txn, _ fsm.Position, payload []byte) (any, error) {
	c, err := decodeCursorCmd(payload)
	if err != nil {
		return nil, err
	}
	cur, _, err := getU64(tx, cursorKey(c.Region))
	if err != nil {
		return nil, err
	}
	end, _, err := getU64(tx, nextKey(c.Region))
	if err != nil {
		return nil, err
	}
	pos := min(c.Pos, end)
	if pos <= cur {
		return nil, nil
	}
	holes, _, err := getU64(tx, holesKey(c.Region))
	if err != nil {
		return nil, err
	}
	for p := cur; p < pos; p++ {
		if holes > 0 { // only then may an entry below pos be gone already
			if _, err := tx.Get(outKey(c.Region, p)); errors.Is(err, badger.ErrKeyNotFound) {
				holes--
				continue
			} else if err != nil {
				return nil, err
			}
		}
		if err := tx.Delete(outKey(c.Region, p)); err != nil {
			return nil, err
		}
	}
	if err := setHoles(tx, c.Region, holes); err != nil {
		return nil, err
	}
	return nil, setU64(tx, cursorKey(c.Region), pos)
}

// item is one outbox entry.
type item struct {
	Pos     uint64
	Payload []byte
}

// source reads a region's outbox by position (peerqueue.Source).
type source struct {
	db     *badger.DB
	region string
}

func (s source) Read(from uint64, max int) (items []item, next uint64, err error) {
	next = from
	prefix := outPrefix(s.region)
	err = s.db.View(func(tx *badger.Txn) error {
		it := tx.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: true, PrefetchSize: max})
		defer it.Close()
		for it.Seek(outKey(s.region, from)); it.Valid() && len(items) < max; it.Next() {
			k := it.Item().Key()
			if len(k) != len(prefix)+8 {
				continue
			}
			pos := binary.BigEndian.Uint64(k[len(prefix):])
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			items = append(items, item{Pos: pos, Payload: v})
			next = pos + 1
		}
		return nil
	})
	return items, next, err
}

// backlog is how many messages wait in region's outbox.
func backlog(db *badger.DB, region string) (uint64, error) {
	var n uint64
	err := db.View(func(tx *badger.Txn) error {
		end, _, err := getU64(tx, nextKey(region))
		if err != nil {
			return err
		}
		cur, _, err := getU64(tx, cursorKey(region))
		if err != nil {
			return err
		}
		holes, _, err := getU64(tx, holesKey(region))
		n = end - min(cur, end)
		n -= min(holes, n)
		return err
	})
	return n, err
}

// Proposer appends a command to the Raft log (*cluster.Raft).
type Proposer interface {
	Propose(ctx context.Context, t byte, payload []byte) (any, error)
}

// cursorStore keeps a link's cursor in the Raft log (peerqueue.CursorStore):
// Load reads this node's applied copy, Save commits it.
type cursorStore struct {
	db      *badger.DB
	prop    Proposer
	region  string
	timeout func() (context.Context, context.CancelFunc)
}

func (c cursorStore) Load() (uint64, bool, error) {
	var pos uint64
	var ok bool
	err := c.db.View(func(tx *badger.Txn) error {
		var err error
		pos, ok, err = getU64(tx, cursorKey(c.region))
		return err
	})
	return pos, ok, err
}

func (c cursorStore) Save(pos uint64) error {
	ctx, cancel := c.timeout()
	defer cancel()
	_, err := c.prop.Propose(ctx, wire.CmdRegionCursor, cursorCmd{Region: c.region, Pos: pos}.encode())
	return err
}
