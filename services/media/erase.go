package media

import (
	"bytes"
	"encoding/json"
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
//   - uid's daily quota counters go.
//
// Finding uid's uploads reads every media record (there is no index by
// owner): a rare command, paid once per step.
func (s *Service) EraseAccount(tx *badger.Txn, uid string, b *fsm.Budget) (done bool, after func(), err error) {
	if wire.ValidUserID(uid) != nil {
		return false, nil, fmt.Errorf("%w: bad uid", errBadCommand)
	}
	var mine []Record
	it := tx.NewIterator(badger.IteratorOptions{Prefix: []byte(prefixRecord), PrefetchValues: true})
	for it.Rewind(); it.Valid(); it.Next() {
		var r Record
		if err := it.Item().Value(func(v []byte) error { return json.Unmarshal(v, &r) }); err != nil {
			continue // not a record this version reads; never uid's to judge
		}
		if r.Owner == uid && !r.Erased {
			mine = append(mine, r)
		}
	}
	it.Close()
	for _, r := range mine {
		grouped, err := hasKeys(tx, grantGroupPrefix(r.ID))
		if err != nil {
			return false, nil, err
		}
		if grouped {
			continue
		}
		if done, err := fsm.DeleteMatching(tx, []byte(prefixGrantUser+r.ID+"/"), b, nil); err != nil || !done {
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
	suffix := []byte("/" + uid)
	if done, err := fsm.DeleteMatching(tx, []byte(prefixGrantUser), b, func(k, _ []byte) (bool, error) {
		return bytes.HasSuffix(k, suffix), nil
	}); err != nil || !done {
		return false, nil, err
	}
	if done, err := fsm.DeleteMatching(tx, []byte(prefixQuota+uid+"/"), b, nil); err != nil || !done {
		return false, nil, err
	}
	return true, nil, nil
}

func hasKeys(tx *badger.Txn, prefix []byte) (bool, error) {
	it := tx.NewIterator(badger.IteratorOptions{Prefix: prefix})
	defer it.Close()
	it.Rewind()
	return it.Valid(), nil
}
