package media

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/internal/wire"
)

// EraseAccount is the media service's part of erasing an account (an
// auth.Eraser, see services/auth/delete.go). One bounded step,
// deterministic, only under r/media/:
//
//   - uid's uploads that were never sent to a group (unsent, or sent
//     only in direct conversations) are marked Erased and lose their
//     grants at once, so nobody can read them; the sweeper deletes their
//     files from every tier and then the record (CmdMediaDelete), since
//     an FSM handler cannot touch object storage.
//   - uploads of uid that a group received stay with the group (and the
//     uploader's ID on the record), as group messages do.
//   - uid's grants to other users' uploads go (those stay their owners').
//   - uid's daily quota counters and the Idempotency-Keys of uid's
//     uploads go.
//
// Finding uid's uploads and grants reads uid's entries of the indexes
// by user (index.go) once this node's index is complete, every media
// record and user grant before: the same keys, in the same order, with
// the same budget either way.
func (s *Service) EraseAccount(tx *badger.Txn, uid string, b *fsm.Budget) (done bool, after func(), err error) {
	// uid may be a user of another region (name@region, erased there):
	// the records of its media that came here in its direct messages go.
	if wire.ValidPeerID(uid) != nil {
		return false, nil, fmt.Errorf("%w: bad uid", errBadCommand)
	}
	indexed, err := mediaIndexed(tx)
	if err != nil {
		return false, nil, err
	}
	mine, err := uploadsOf(tx, uid, indexed)
	if err != nil {
		return false, nil, err
	}
	for _, r := range mine {
		grouped, err := hasKeys(tx, grantGroupPrefix(r.ID))
		if err != nil {
			return false, nil, err
		}
		if grouped {
			continue
		}
		var gone [][]byte
		done, err := fsm.DeleteMatching(tx, []byte(prefixGrantUser+r.ID+"/"), b, func(k, _ []byte) (bool, error) {
			gone = append(gone, bytes.Clone(k))
			return true, nil
		})
		if err == nil {
			err = unindexGrants(tx, gone)
		}
		if err != nil || !done {
			return false, nil, err
		}
		r.Erased = true
		val, err := json.Marshal(r)
		if err != nil {
			return false, nil, err
		}
		if ok, err := b.Set(tx, recordKey(r.ID), val); err != nil || !ok {
			return false, nil, err
		}
	}
	if indexed {
		done, err = deleteGrantsTo(tx, uid, b)
	} else {
		suffix := []byte("/" + uid)
		var gone [][]byte
		done, err = fsm.DeleteMatching(tx, []byte(prefixGrantUser), b, func(k, _ []byte) (bool, error) {
			if !bytes.HasSuffix(k, suffix) {
				return false, nil
			}
			gone = append(gone, bytes.Clone(k))
			return true, nil
		})
		if err == nil {
			err = unindexGrants(tx, gone)
		}
	}
	if err != nil || !done {
		return false, nil, err
	}
	if done, err := fsm.DeleteMatching(tx, []byte(prefixQuota+uid+"/"), b, nil); err != nil || !done {
		return false, nil, err
	}
	if done, err := fsm.DeleteMatching(tx, []byte(prefixUploadKey+uid+"/"), b, nil); err != nil || !done {
		return false, nil, err
	}
	return true, nil, nil
}

// uploadsOf reads uid's records not erased yet, in ID order: from uid's
// index entries when indexed, else from every record.
func uploadsOf(tx *badger.Txn, uid string, indexed bool) ([]Record, error) {
	var mine []Record
	consider := func(v []byte) {
		var r Record
		if err := json.Unmarshal(v, &r); err != nil {
			return // not a record this version reads; never uid's to judge
		}
		if r.Owner == uid && !r.Erased {
			mine = append(mine, r)
		}
	}
	if !indexed {
		it := tx.NewIterator(badger.IteratorOptions{Prefix: []byte(prefixRecord), PrefetchValues: true})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			if err := it.Item().Value(func(v []byte) error { consider(v); return nil }); err != nil {
				return nil, err
			}
		}
		return mine, nil
	}
	prefix := []byte(prefixOwnerIndex + uid + "/")
	it := tx.NewIterator(badger.IteratorOptions{Prefix: prefix})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		item, err := tx.Get(recordKey(string(it.Item().Key()[len(prefix):])))
		if errors.Is(err, badger.ErrKeyNotFound) {
			continue // an entry that outlived its record
		}
		if err != nil {
			return nil, err
		}
		if err := item.Value(func(v []byte) error { consider(v); return nil }); err != nil {
			return nil, err
		}
	}
	return mine, nil
}

// deleteGrantsTo deletes uid's grants to others' uploads through uid's
// index entries, as far as b goes, exactly as fsm.DeleteMatching over
// every user grant does: the same keys in key order, and not done when
// the budget ran out before a key under r/media/gu/ that follows the
// last one deleted.
func deleteGrantsTo(tx *badger.Txn, uid string, b *fsm.Budget) (bool, error) {
	prefix := []byte(prefixGrantIndex + uid + "/")
	var keys, stale [][]byte
	it := tx.NewIterator(badger.IteratorOptions{Prefix: prefix})
	for it.Rewind(); it.Valid(); it.Next() {
		id := string(it.Item().Key()[len(prefix):])
		k := grantUserKey(id, uid)
		found, err := keyExists(tx, k)
		if err != nil {
			it.Close()
			return false, err
		}
		if found {
			keys = append(keys, k)
		} else {
			stale = append(stale, it.Item().KeyCopy(nil))
		}
	}
	it.Close()
	for _, k := range stale {
		if err := tx.Delete(k); err != nil {
			return false, err
		}
	}
	// The index is in media ID order, the grants in key order ({id}/{uid}):
	// the same but for IDs one of which begins the other (DeleteKeys
	// sorts).
	deleted, done, err := fsm.DeleteKeys(tx, []byte(prefixGrantUser), keys, b)
	if err != nil {
		return false, err
	}
	return done, unindexGrants(tx, deleted)
}

func hasKeys(tx *badger.Txn, prefix []byte) (bool, error) {
	it := tx.NewIterator(badger.IteratorOptions{Prefix: prefix})
	defer it.Close()
	it.Rewind()
	return it.Valid(), nil
}
