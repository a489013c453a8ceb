package media

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/internal/wire"
)

// Indexes by user, for erasing an account (erase.go) without reading
// every user's media: an erase step used to decode every media record
// (to find the user's uploads) and read every user grant (to find the
// user's grants to others' uploads), inside the FSM apply on every
// node, in every step of every erasure.
//
//   - r/media/io/{owner}/{id}: the record of id is owner's.
//   - r/media/iu/{uid}/{id}: r/media/gu/{id}/{uid} (uid may read id).
//
// Both are written with what they index, by every handler of this
// version; an entry may outlive what it names (readers check), never
// the other way round once the index is complete. An erased user's
// upload that a group received keeps its owner entry with its record
// (which keeps the uploader's ID); the others go with their records. Records and grants
// written before this version are indexed by a walk the leader proposes
// in bounded steps (CmdMediaIndex, IndexWalk). Its last step marks the
// index complete (keyMediaIndexed) on a node that applied its first
// step with this code: a node upgraded halfway through a walk indexed
// nothing of the part walked before, so it marks nothing and waits for
// the next walk. Until the mark an erase step reads every record and
// grant as before; either way it finds the same keys, in the same order,
// and spends the same budget (index entries cost none), so nodes with
// and without the mark write the same primary keys.
const (
	prefixOwnerIndex = "r/media/io/"
	prefixGrantIndex = "r/media/iu/"
	keyMediaIndexed  = "r/media/ix/done" // JSON time: the walk that completed the index here
	keyIndexWalk     = "r/media/ix/walk" // JSON time: the walk this node indexed from its first step
)

// indexStepKeys bounds the keys one walk step reads (records and grants).
const indexStepKeys = 2000

// indexEvery is how often the leader walks again once its own index is
// complete (for followers that were upgraded during a walk).
const indexEvery = 24 * time.Hour

func ownerIndexKey(owner, id string) []byte { return []byte(prefixOwnerIndex + owner + "/" + id) }
func grantIndexKey(uid, id string) []byte   { return []byte(prefixGrantIndex + uid + "/" + id) }

// indexOwner indexes record id as owner's.
func indexOwner(tx *badger.Txn, owner, id string) error {
	if owner == "" || strings.IndexByte(owner, '/') >= 0 {
		return nil
	}
	return tx.Set(ownerIndexKey(owner, id), nil)
}

// grantOfKey splits a user grant key r/media/gu/{id}/{uid}.
func grantOfKey(k []byte) (id, uid string, ok bool) {
	rest, found := bytes.CutPrefix(k, []byte(prefixGrantUser))
	if !found {
		return "", "", false
	}
	id, uid, ok = strings.Cut(string(rest), "/")
	return id, uid, ok && id != "" && uid != "" && strings.IndexByte(uid, '/') < 0
}

// indexGrant indexes the user grant key k (other keys: nothing).
func indexGrant(tx *badger.Txn, k []byte) error {
	if id, uid, ok := grantOfKey(k); ok {
		return tx.Set(grantIndexKey(uid, id), nil)
	}
	return nil
}

// unindexGrants drops the index entries of the user grant keys ks.
func unindexGrants(tx *badger.Txn, ks [][]byte) error {
	for _, k := range ks {
		if id, uid, ok := grantOfKey(k); ok {
			if err := tx.Delete(grantIndexKey(uid, id)); err != nil {
				return err
			}
		}
	}
	return nil
}

// deleteGrantsOf deletes the user grants of media id with their index
// entries (applyDelete: no budget).
func deleteGrantsOf(tx *badger.Txn, id string) error {
	var ks [][]byte
	prefix := []byte(prefixGrantUser + id + "/")
	it := tx.NewIterator(badger.IteratorOptions{Prefix: prefix})
	for it.Rewind(); it.Valid(); it.Next() {
		ks = append(ks, it.Item().KeyCopy(nil))
	}
	it.Close()
	for _, k := range ks {
		if err := tx.Delete(k); err != nil {
			return err
		}
	}
	return unindexGrants(tx, ks)
}

func keyExists(tx *badger.Txn, k []byte) (bool, error) {
	_, err := tx.Get(k)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return false, nil
	}
	return err == nil, err
}

// mediaIndexed reports whether this node's index is complete.
func mediaIndexed(tx *badger.Txn) (bool, error) { return mediaIndex.Complete(tx) }

// mediaIndex marks the walk and the completion of the indexes here.
var mediaIndex = fsm.IndexMarks{Walk: []byte(keyIndexWalk), Done: []byte(keyMediaIndexed)}

// indexCmd is one step of the index walk (wire.CmdMediaIndex): the keys
// under r/media/gu/ then r/media/m/ after After (a whole key; "" from
// the start). Walk is the At of the walk's first step, in every step.
type indexCmd struct {
	V     int       `json:"v"`
	After string    `json:"after,omitempty"`
	Walk  time.Time `json:"walk"`
}

const indexCmdVersion = 1

// IndexStep is the value of a walk step: the key the next one starts
// after ("" when the walk is done).
type IndexStep struct{ Next string }

func (s *Service) applyIndex(tx *badger.Txn, _ fsm.Position, payload []byte) (any, error) {
	var c indexCmd
	if err := decode(payload, &c); err != nil {
		return nil, err
	}
	if c.V != indexCmdVersion || c.Walk.IsZero() {
		return nil, fmt.Errorf("%w: index walk version %d", errBadCommand, c.V)
	}
	if c.After == "" {
		if err := mediaIndex.Begin(tx, c.Walk); err != nil {
			return nil, err
		}
	}
	type entry struct{ key, owner string }
	var grants, records []entry
	seen, last := 0, ""
	full := false
	for _, p := range []string{prefixGrantUser, prefixRecord} {
		if full {
			break
		}
		if c.After != "" && c.After >= p+"\xff" {
			continue // walked already
		}
		it := tx.NewIterator(badger.IteratorOptions{Prefix: []byte(p), PrefetchValues: p == prefixRecord})
		start := []byte(p)
		if c.After > p {
			start = []byte(c.After + "\x00")
		}
		for it.Seek(start); it.Valid(); it.Next() {
			if seen == indexStepKeys {
				full = true
				break
			}
			seen++
			k := string(it.Item().Key())
			last = k
			if p == prefixGrantUser {
				grants = append(grants, entry{key: k})
				continue
			}
			var r Record
			if err := it.Item().Value(func(v []byte) error { return json.Unmarshal(v, &r) }); err != nil {
				continue // not a record this version reads
			}
			records = append(records, entry{key: k, owner: r.Owner})
		}
		it.Close()
	}
	for _, g := range grants {
		id, uid, ok := grantOfKey([]byte(g.key))
		if !ok {
			continue
		}
		if err := setIfMissing(tx, grantIndexKey(uid, id)); err != nil {
			return nil, err
		}
	}
	for _, r := range records {
		if r.owner == "" || strings.IndexByte(r.owner, '/') >= 0 {
			continue
		}
		if err := setIfMissing(tx, ownerIndexKey(r.owner, r.key[len(prefixRecord):])); err != nil {
			return nil, err
		}
	}
	if full {
		return IndexStep{Next: last}, nil
	}
	return IndexStep{}, mediaIndex.End(tx, c.Walk)
}

func setIfMissing(tx *badger.Txn, k []byte) error {
	if found, err := keyExists(tx, k); err != nil || found {
		return err
	}
	return tx.Set(k, nil)
}

// IndexWalk walks every record and user grant once, step by step,
// indexing those made before the index (the leader runs it from the
// sweeper, from its second sweep on: see maybeIndexWalk).
func (s *Service) IndexWalk(ctx context.Context) error {
	walk := s.now().UTC()
	after := ""
	for {
		v, err := s.propose(ctx, wire.CmdMediaIndex, indexCmd{V: indexCmdVersion, After: after, Walk: walk})
		if err != nil {
			return fmt.Errorf("media: index walk: %w", err)
		}
		step, ok := v.(IndexStep)
		if !ok {
			return fmt.Errorf("media: index walk: unexpected result %T", v)
		}
		if step.Next == "" {
			return nil
		}
		after = step.Next
	}
}

// maybeIndexWalk walks (IndexWalk) while this node's index is not
// complete, and every indexEvery after: a follower upgraded during a
// walk completes its index in a later one. It answers when it last
// walked.
func (s *Service) maybeIndexWalk(ctx context.Context, last time.Time) time.Time {
	done := false
	_ = s.db.View(func(tx *badger.Txn) error {
		var err error
		done, err = mediaIndexed(tx)
		return err
	})
	now := s.now()
	switch {
	case done && last.IsZero():
		return now // complete here: the next walk in indexEvery
	case done && now.Sub(last) < indexEvery:
		return last
	}
	if err := s.IndexWalk(ctx); err != nil {
		if ctx.Err() == nil {
			s.log.Warn("indexing media by user; an account erasure reads every record until it is done", "err", err)
		}
		return last
	}
	return now
}
