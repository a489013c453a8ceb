package push

// The outbox: the replicated record of which committed messages still
// have pushes to decide or send, so that a crash or a leadership change
// neither loses a push nor sends it twice.
//
// A message enters it in the very transaction that stores it (the
// archive calls Stage from its FSM handler), so that a committed message
// is in the outbox on every node, exactly when it is stored: no extra
// proposal, and nothing to lose between commit and queueing. Direct
// messages to a user without a registered device are not staged at all
// (most messages of a deployment without push cost nothing here).
//
// The push bridge's sender (on the Raft leader) records its progress
// with CmdPushProgress: the devices it handled for a message (pushed,
// given up, or found dead) and the messages it is done with, which
// leave the outbox with their device records. A new leader resumes from
// the outbox and skips the devices recorded as handled, so only the
// pushes whose progress was not yet committed when the old leader died
// can be sent twice (and the per-conversation collapse ID makes the
// second one replace the first on the device).

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/internal/snowflake"
	"github.com/edgechat/edgechat/internal/wire"
)

const (
	prefixOutbox  = "r/push/q/" // + id(8) → nil: a message with pushes to decide
	prefixHandled = "r/push/h/" // + id(8) + clientID → nil: a device handled for the message

	// MaxProgressEntries bounds the devices plus messages of one
	// CmdPushProgress, so that one command fits a transaction.
	MaxProgressEntries = 20_000
)

func outboxKey(id snowflake.ID) []byte {
	return binary.BigEndian.AppendUint64([]byte(prefixOutbox), uint64(id))
}

func handledPrefix(id snowflake.ID) []byte {
	return binary.BigEndian.AppendUint64([]byte(prefixHandled), uint64(id))
}

// StagedMessage is what the archive tells the outbox of a newly stored
// message.
type StagedMessage struct {
	ID    snowflake.ID
	From  string
	To    string // direct message
	Group string // group message
}

// outbox is the in-memory side of the outbox: who hears of staged
// messages.
type outbox struct {
	mu       sync.RWMutex
	onStaged []func(StagedMessage)
	// onUnacked hear of unacknowledged deliveries recorded (unacked.go).
	onUnacked []func(id snowflake.ID)
}

// OnStaged registers fn to hear, on this node, of each message staged,
// once its transaction is committed (on the FSM's apply goroutine: fn
// must not block).
func (s *Service) OnStaged(fn func(StagedMessage)) {
	s.out.mu.Lock()
	s.out.onStaged = append(s.out.onStaged, fn)
	s.out.mu.Unlock()
}

// Stage puts a newly stored message into the outbox inside the archive's
// transaction and returns the function to call once it is committed
// (nil when the message was not staged: a direct message to a user with
// no device, or to oneself). It reads only replicated, committed keys, so
// every node decides alike.
func (s *Service) Stage(tx *badger.Txn, m StagedMessage) (afterCommit func(), err error) {
	if m.Group == "" {
		if m.To == "" || m.To == m.From || !s.holders.mayHave(m.To) {
			return nil, nil
		}
		// Read the committed state, not tx: an iterator in an update
		// transaction sorts all of its pending writes, which made staging
		// quadratic in the messages of a Raft entry (56% of a node's CPU
		// with pipelined publishes). Still the same answer on every node;
		// a first device registered in the same entry as the message is
		// not seen (that message is not pushed).
		var has bool
		err := s.db.View(func(vtx *badger.Txn) error {
			var err error
			has, err = hasPrefix(vtx, []byte(prefixDevice+m.To+"/"))
			return err
		})
		if err != nil || !has {
			return nil, err
		}
	}
	if err := tx.Set(outboxKey(m.ID), nil); err != nil {
		return nil, err
	}
	return func() {
		s.out.mu.RLock()
		defer s.out.mu.RUnlock()
		for _, fn := range s.out.onStaged {
			fn(m)
		}
	}, nil
}

func hasPrefix(tx *badger.Txn, prefix []byte) (bool, error) {
	it := tx.NewIterator(badger.IteratorOptions{Prefix: prefix})
	defer it.Close()
	it.Rewind()
	return it.Valid(), nil
}

// EachQueued calls fn with every message ID in the outbox, oldest first,
// until fn returns false.
func (s *Service) EachQueued(fn func(id snowflake.ID) bool) error {
	return s.db.View(func(tx *badger.Txn) error {
		prefix := []byte(prefixOutbox)
		it := tx.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			k := it.Item().Key()
			if len(k) != len(prefix)+8 {
				continue
			}
			if !fn(snowflake.ID(binary.BigEndian.Uint64(k[len(prefix):]))) {
				return nil
			}
		}
		return nil
	})
}

// Queued reports whether message id is in the outbox.
func (s *Service) Queued(id snowflake.ID) (bool, error) {
	var ok bool
	err := s.db.View(func(tx *badger.Txn) error {
		_, err := tx.Get(outboxKey(id))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		ok = err == nil
		return err
	})
	return ok, err
}

// Handled lists the client IDs ({uid}/{device}) recorded as handled for
// message id, sorted.
func (s *Service) Handled(id snowflake.ID) ([]string, error) {
	var out []string
	err := s.db.View(func(tx *badger.Txn) error {
		prefix := handledPrefix(id)
		it := tx.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			out = append(out, string(it.Item().Key()[len(prefix):]))
		}
		return nil
	})
	return out, err
}

// Progress is what the sender records: devices handled per message, and
// messages done (they leave the outbox). Exported for the command's
// JSON.
type Progress struct {
	Handled []HandledDevices `json:"handled,omitempty"`
	Done    []snowflake.ID   `json:"done,omitempty"`
}

// HandledDevices are client IDs handled for one message.
type HandledDevices struct {
	ID      snowflake.ID `json:"id"`
	Clients []string     `json:"clients"`
}

// Size is the number of entries of p (devices and messages).
func (p Progress) Size() int {
	n := len(p.Done)
	for _, h := range p.Handled {
		n += len(h.Clients)
	}
	return n
}

// RecordProgress commits p. It does nothing for an empty p; a p over
// MaxProgressEntries is refused (split it).
func (s *Service) RecordProgress(ctx context.Context, p Progress) error {
	switch n := p.Size(); {
	case n == 0:
		return nil
	case n > MaxProgressEntries:
		return fmt.Errorf("%w: %d progress entries, limit %d", errBadCommand, n, MaxProgressEntries)
	}
	parts, err := s.splitProgress(p)
	if err != nil {
		return fmt.Errorf("push: record progress: %w", err)
	}
	for _, q := range parts {
		// A failure after a part committed: the caller records all of p
		// again, which is harmless (applyProgress is idempotent).
		for {
			v, err := s.propose(ctx, wire.CmdPushProgress, q)
			if err != nil {
				return fmt.Errorf("push: record progress: %w", err)
			}
			left, ok := v.(progressLeft)
			if !ok || len(left.IDs) == 0 {
				break
			}
			// Out of the outbox already, with records left: each round
			// deletes about a megabyte of them.
			q = Progress{Done: left.IDs}
		}
	}
	return nil
}

// splitProgress splits p into commands that each fit a node's
// transaction: a done message removes its outbox entry and every record
// of it (devices handled, deliveries unacknowledged, committed by
// earlier commands), which p.Size does not count; 10,000 messages with
// two records each were refused as too large. The records are counted
// in the committed state; the handled devices go with the first command.
// A message whose records alone exceed MaxProgressEntries goes in a
// command of its own.
func (s *Service) splitProgress(p Progress) ([]Progress, error) {
	if len(p.Done) == 0 {
		return []Progress{p}, nil
	}
	records, err := s.records(p.Done)
	if err != nil {
		return nil, err
	}
	cur := Progress{Handled: p.Handled}
	cost := cur.Size()
	var out []Progress
	for _, id := range p.Done {
		c := 1 + records[id]
		if cost > 0 && cost+c > MaxProgressEntries {
			out = append(out, cur)
			cur, cost = Progress{}, 0
		}
		cur.Done = append(cur.Done, id)
		cost += c
	}
	return append(out, cur), nil
}

// records counts the handled and unacknowledged records of each of ids.
func (s *Service) records(ids []snowflake.ID) (map[snowflake.ID]int, error) {
	sorted := slices.Compact(slices.Sorted(slices.Values(ids)))
	out := make(map[snowflake.ID]int, len(sorted))
	err := s.db.View(func(tx *badger.Txn) error {
		for _, kind := range []string{prefixHandled, prefixUnacked} {
			// One iterator, forward only (as fsm.DeletePrefixes).
			it := tx.NewIterator(badger.IteratorOptions{Prefix: []byte(kind)})
			it.Seek(binary.BigEndian.AppendUint64([]byte(kind), uint64(sorted[0])))
			for _, id := range sorted {
				if !it.Valid() {
					break
				}
				p := binary.BigEndian.AppendUint64([]byte(kind), uint64(id))
				if bytes.Compare(it.Item().Key(), p) < 0 {
					it.Seek(p)
				}
				for ; it.ValidForPrefix(p); it.Next() {
					out[id]++
				}
			}
			it.Close()
		}
		return nil
	})
	return out, err
}

// applyProgress records handled devices of messages still in the outbox
// (a record for a message already done would never be cleaned up) and
// removes done messages with their records. Deletes and sets are
// idempotent, so a rerun after ErrTxnTooBig is harmless.
func (s *Service) applyProgress(tx *badger.Txn, _ fsm.Position, payload []byte) (any, error) {
	var p Progress
	if err := json.Unmarshal(payload, &p); err != nil {
		return nil, fmt.Errorf("%w: %v", errBadCommand, err)
	}
	if p.Size() > MaxProgressEntries {
		return nil, fmt.Errorf("%w: %d progress entries", errBadCommand, p.Size())
	}
	for _, h := range p.Handled {
		for _, c := range h.Clients {
			if !validClientID(c) {
				return nil, fmt.Errorf("%w: client id %q", errBadCommand, c)
			}
		}
	}
	done := make(map[snowflake.ID]bool, len(p.Done))
	for _, id := range p.Done {
		done[id] = true
	}
	ids := slices.Compact(slices.Sorted(maps.Keys(done)))
	// The done messages' records, found before this command writes any:
	// one iterator per kind of record, not two per message (each sorted
	// all of the transaction's pending writes).
	// They go as far as one transaction holds (progressDeleteBytes): a
	// message with more records than that (a group of tens of thousands
	// of devices) leaves the outbox now and the rest of its records with
	// the next commands (progressLeft), so that the command is not
	// refused, which left the message done for ever and the sender
	// retrying it before any later progress.
	budget := progressDeleteBytes
	var left []snowflake.ID
	for _, prefix := range []func(snowflake.ID) []byte{handledPrefix, unackedPrefix} {
		rest, err := deleteRecords(tx, ids, prefix, &budget)
		if err != nil {
			return nil, err
		}
		left = append(left, rest...)
	}
	for _, id := range ids {
		if err := tx.Delete(outboxKey(id)); err != nil {
			return nil, err
		}
	}
	for _, h := range p.Handled {
		if done[h.ID] {
			continue
		}
		if _, err := tx.Get(outboxKey(h.ID)); errors.Is(err, badger.ErrKeyNotFound) {
			continue
		} else if err != nil {
			return nil, err
		}
		for _, c := range h.Clients {
			if err := tx.Set(append(handledPrefix(h.ID), c...), nil); err != nil {
				return nil, err
			}
		}
	}
	if len(left) > 0 {
		slices.Sort(left)
		return progressLeft{IDs: slices.Compact(left)}, nil
	}
	return nil, nil
}

// progressDeleteBytes bounds what one progress command deletes of done
// messages' records, in Badger's estimate (key + 12 bytes each, see
// recordCost): a node's transaction holds about 2.4 MB (15% of its 16
// MiB memtable), and the command's own writes (20,000 entries at most)
// come on top. Deterministic, so every replica deletes the same.
const progressDeleteBytes = 1 << 20

// recordCost is Badger's estimate of a delete of key in a transaction.
func recordCost(key []byte) int { return len(key) + 12 }

// progressLeft is a progress command's value when done messages of it
// still have records (beyond progressDeleteBytes): they have left the
// outbox, and RecordProgress marks them done again until none is left.
type progressLeft struct{ IDs []snowflake.ID }

// deleteRecords deletes the records under prefix(id) of each of ids
// (sorted), in order, as far as budget goes, with one forward iterator
// (as fsm.DeletePrefixes), and returns the ids with records left: the
// one the budget ran out in and every later one (which may have none;
// marking them done again costs a seek).
func deleteRecords(tx *badger.Txn, ids []snowflake.ID, prefix func(snowflake.ID) []byte, budget *int) ([]snowflake.ID, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	if *budget <= 0 {
		return ids, nil
	}
	kind := prefix(ids[0])[:len(prefix(ids[0]))-8]
	var keys [][]byte
	it := tx.NewIterator(badger.IteratorOptions{Prefix: kind})
	it.Seek(prefix(ids[0]))
	var left []snowflake.ID
	for i, id := range ids {
		if !it.Valid() {
			break
		}
		p := prefix(id)
		if bytes.Compare(it.Item().Key(), p) < 0 {
			it.Seek(p)
		}
		for ; it.ValidForPrefix(p); it.Next() {
			c := recordCost(it.Item().Key())
			if c > *budget {
				left = ids[i:]
				break
			}
			*budget -= c
			keys = append(keys, it.Item().KeyCopy(nil))
		}
		if left != nil {
			break
		}
	}
	it.Close()
	for _, k := range keys {
		if err := tx.Delete(k); err != nil {
			return nil, err
		}
	}
	return left, nil
}

// validClientID: "{uid}/{device}" with both halves valid.
func validClientID(c string) bool {
	for i := 0; i < len(c); i++ {
		if c[i] == '/' {
			return wire.ValidUserID(c[:i]) == nil && ValidDevice(c[i+1:]) == nil
		}
	}
	return false
}
