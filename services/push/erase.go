package push

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/internal/wire"
)

// EraseAccount is the push service's part of erasing an account (an
// auth.Eraser, see services/auth/delete.go): uid's devices with their
// token index entries, mutes, settings and group opt-ins. One bounded
// step, deterministic, only under r/push/. Other users' mutes of their
// conversation with uid are theirs and stay (they mute nothing now).
// The outbox (q/, h/) holds message IDs and client IDs only for a day's
// pushes and is left to its own clean-up.
func (s *Service) EraseAccount(tx *badger.Txn, uid string, b *fsm.Budget) (done bool, after func(), err error) {
	if wire.ValidUserID(uid) != nil {
		if strings.IndexByte(uid, '@') >= 0 && wire.ValidPeerID(uid) == nil {
			return true, nil, nil // a user of another region has no devices here
		}
		return false, nil, fmt.Errorf("%w: bad uid", errBadCommand)
	}
	// Once committed, whatever this step removed of uid's devices, mutes
	// and settings is not read from the caches of Devices and of Mutes
	// and Settings (auth runs after on every return, an error's
	// included: the writes before it are committed).
	after = func() {
		s.devices.drop(uid)
		s.prefsCache.drop(uid)
	}
	// Devices: the token index entry first (it names the device), then
	// the device; two writes each.
	var devs []Device
	prefix := []byte(prefixDevice + uid + "/")
	it := tx.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: true})
	for it.Rewind(); it.Valid(); it.Next() {
		var d Device
		if err := it.Item().Value(func(v []byte) error { return json.Unmarshal(v, &d) }); err != nil {
			it.Close()
			return false, after, err
		}
		devs = append(devs, d)
	}
	it.Close()
	for _, d := range devs {
		if b.Spent() {
			return false, after, nil
		}
		tk := tokenKey(d.Platform, d.registration().tokenOf())
		holder, err := tokenHolder(tx, tk)
		if err != nil {
			return false, after, err
		}
		// The pair goes together, even past the budget by one.
		b.Left -= 2
		if holder == d.ClientID() {
			if err := tx.Delete(tk); err != nil {
				return false, after, err
			}
		}
		if err := tx.Delete(deviceKey(uid, d.Device)); err != nil {
			return false, after, err
		}
	}
	// Opt-ins are kept twice (by group and by user).
	var gids []string
	uprefix := []byte(prefixUserOptIn + uid + "/")
	it = tx.NewIterator(badger.IteratorOptions{Prefix: uprefix})
	for it.Rewind(); it.Valid(); it.Next() {
		gids = append(gids, string(it.Item().Key()[len(uprefix):]))
	}
	it.Close()
	for _, gid := range gids {
		if b.Spent() {
			return false, after, nil
		}
		b.Left -= 2 // the pair goes together, even past the budget by one
		if err := tx.Delete(optInKey(gid, uid)); err != nil {
			return false, after, err
		}
		if err := tx.Delete(userOptInKey(uid, gid)); err != nil {
			return false, after, err
		}
	}
	if done, err := fsm.DeleteMatching(tx, []byte(prefixMute+uid+"/"), b, nil); err != nil || !done {
		return false, after, err
	}
	if done, err := fsm.DeleteMatching(tx, []byte(prefixSettings+uid), b, func(k, _ []byte) (bool, error) {
		return string(k) == prefixSettings+uid, nil // not the settings of uids that begin with uid
	}); err != nil || !done {
		return false, after, err
	}
	return true, after, nil
}
