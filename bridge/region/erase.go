package region

import (
	"bytes"
	"encoding/binary"
	"encoding/json"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/internal/address"
)

// Erasing an account (services/auth/delete.go, an auth.Eraser): the
// erasure takes the whole history of the user's direct conversations,
// and a direct message to a user of another region is also in the
// link's outbox until that region acknowledges it (a link that is down
// keeps it up to --link-retention). Those copies go too, so that a
// message of an erased account never leaves the region after the
// erasure; so do the user's contact and block changes still waiting
// there (the other region keeps the copies it had, as for what it
// stored already). The user's group messages stay (they stay with the
// group everywhere), and so do the leaves of groups of other regions
// that the users service's eraser stages for the user.
//
// The entries are deleted by position, as expired messages are
// (applyExpire), and counted as holes above the cursor.

// EraseAccount is the bridge's part of erasing uid, a user of this
// region: one bounded step, deterministic (it reads only replicated
// keys: every outbox that was ever staged, whatever the node's links).
// For a user of another region that its region erased (erasure.go) it
// takes instead the direct messages to that user and the contact and
// block changes about them still waiting in the outboxes.
func (b *Bridge) EraseAccount(tx *badger.Txn, uid string, bud *fsm.Budget) (done bool, after func(), err error) {
	done, after, err = b.eraseOutboxes(tx, uid, bud)
	if a, perr := address.Parse(uid); err == nil && perr == nil && a.Region != "" {
		wake := after
		after = func() {
			b.forgetErased(a)
			if wake != nil {
				wake()
			}
		}
	}
	return done, after, err
}

// forgetErased drops what this node remembers of a, a user of another
// region erased here (its region erased it and told us), once a step of
// the erasure committed: its profile in the cache of remote profiles
// (served, expired, while the link is down) and, on the leader, the last
// presence the link received, which it retains again as "unknown" with
// that last seen when nobody here watches a any more or the link goes
// down. Every step forgets it again: a step is applied on every node.
func (b *Bridge) forgetErased(a address.Address) {
	b.q.mu.Lock()
	delete(b.q.cache, a.String())
	b.q.mu.Unlock()
	b.mu.Lock()
	if e := b.eph[a.Region]; e != nil {
		delete(e.last, a.Name)
	}
	b.mu.Unlock()
}

// eraseOutboxes is EraseAccount's step over the outboxes.
func (b *Bridge) eraseOutboxes(tx *badger.Txn, uid string, bud *fsm.Budget) (done bool, after func(), err error) {
	regions, err := outboxRegions(tx)
	if err != nil {
		return false, nil, err
	}
	var woke []string
	for _, region := range regions {
		if bud.Left < 2 { // at least one entry and the holes count
			return false, b.wake(woke), nil
		}
		keys, more, err := erasedEntries(tx, region, uid, bud.Left-1)
		if err != nil {
			return false, nil, err
		}
		if len(keys) > 0 {
			holes, _, err := getU64(tx, holesKey(region))
			if err != nil {
				return false, nil, err
			}
			for _, k := range keys {
				if _, err := bud.Delete(tx, k); err != nil {
					return false, nil, err
				}
			}
			if _, err := bud.Set(tx, holesKey(region), binary.BigEndian.AppendUint64(nil, holes+uint64(len(keys)))); err != nil {
				return false, nil, err
			}
			woke = append(woke, region)
		}
		if more {
			return false, b.wake(woke), nil
		}
	}
	return true, b.wake(woke), nil
}

// outboxRegions lists, in key order, the regions that ever had an outbox
// here (r/rgn/n/{region}: staging writes it).
func outboxRegions(tx *badger.Txn) ([]string, error) {
	var out []string
	it := tx.NewIterator(badger.IteratorOptions{Prefix: []byte(prefixNext)})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		r := string(it.Item().Key()[len(prefixNext):])
		if address.ValidRegion(r) == nil {
			out = append(out, r)
		}
	}
	return out, nil
}

// erasedEntries finds, in region's outbox, at most max entries of uid
// that the erasure takes: direct messages uid sent and contact or block
// changes uid made. more tells that there are others.
func erasedEntries(tx *badger.Txn, region, uid string, max int) (keys [][]byte, more bool, err error) {
	prefix := outPrefix(region)
	it := tx.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: true})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		item := it.Item()
		if len(item.Key()) != len(prefix)+8 {
			continue
		}
		var match bool
		if err := item.Value(func(v []byte) error {
			match = erasedEntry(v, uid)
			return nil
		}); err != nil {
			return nil, false, err
		}
		if !match {
			continue
		}
		if len(keys) == max {
			return keys, true, nil
		}
		keys = append(keys, item.KeyCopy(nil))
	}
	return keys, false, nil
}

// erasedEntry tells whether an outbox entry is uid's direct message or
// uid's contact or block change. Most entries are told without decoding
// them (a backlog may hold a week of a region's messages): a user ID
// needs no escaping in JSON.
func erasedEntry(entry []byte, uid string) bool {
	if len(entry) == 0 {
		return false
	}
	if address.RegionOf(uid) != "" {
		return erasedEntryTo(entry, uid)
	}
	switch entry[0] {
	case '{':
		if !bytes.Contains(entry, []byte(`"from":"`+uid+`"`)) {
			return false
		}
		var env struct {
			From  string `json:"from"`
			To    string `json:"to"`
			Group string `json:"group"`
		}
		return json.Unmarshal(entry, &env) == nil && env.Group == "" && env.From == uid && address.RegionOf(env.To) != ""
	case relMark:
		if !bytes.Contains(entry, []byte(`"owner":"`+uid+`"`)) {
			return false
		}
		var r relationFrame
		return json.Unmarshal(entry[1:], &r) == nil && r.Owner == uid
	}
	return false
}

// erasedEntryTo tells whether an outbox entry is a direct message to
// uid, a user of another region that its region erased (erasure.go), or
// a contact or block change about uid: they would only be refused there.
func erasedEntryTo(entry []byte, uid string) bool {
	switch entry[0] {
	case '{':
		if !bytes.Contains(entry, []byte(`"to":"`+uid+`"`)) {
			return false
		}
		var env struct {
			To    string `json:"to"`
			Group string `json:"group"`
		}
		return json.Unmarshal(entry, &env) == nil && env.Group == "" && env.To == uid
	case relMark:
		if !bytes.Contains(entry, []byte(`"uid":"`+uid+`"`)) {
			return false
		}
		var r relationFrame
		return json.Unmarshal(entry[1:], &r) == nil && r.UID == uid
	}
	return false
}
