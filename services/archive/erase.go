package archive

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/internal/snowflake"
	"github.com/edgechat/edgechat/internal/wire"
)

// Erasing an account (issue 11; the command is auth's CmdAccountErase,
// see services/auth/delete.go, which calls EraseAccount in every step).
//
// Every direct conversation of the user goes, both sides. A step does
// what its budget allows, in this order, so that the next step resumes
// where it stopped and the peers read a consistent store between steps:
//
//  1. Each peer's entry listing the conversation (v/{peer}/{uid}): the
//     peer's conversation list and unread total stop showing it at once.
//  2. For a conversation with sealed segments only, the peer's dedup/
//     entries that refer to it (the messages' c/ keys, which name their
//     cids, are gone), found by walking the peer's dedup/ (before the s/
//     entries they refer to go).
//  3. The sync entries, walking the user's own s/: a direct message's
//     entries of both sides share their commit position, so each of the
//     user's entries names the peer's (s/{peer}/{seq}, deleted when it
//     names the same message), with the message's m/ key. The peer's
//     sync stops listing them.
//  4. Per peer, the history c/{convKey}/: each message with its m/ key (a
//     pointer, or the body in the older layout) and, for the peer's
//     messages, the peer's dedup/{peer}/{cid} (the cid is in the body;
//     for a peer of another region, "@" and the message's ID).
//  5. Per peer, i/ of both sides, the sealed segments' index
//     r/arch/sg/{convKey}/ (the sealer collects the objects no longer
//     referenced), rc/ of both sides, x/, w/ of both sides, and
//     v/{uid}/{peer} last: while it exists the peer is visited again.
//
// Then the user's own keys: dedup/{uid}/ (group messages' too: nobody
// sends as the user again), rc/{uid}/ (group cursors too), i/{uid}/,
// w/{uid}/ and v/{uid}/. Group messages (c/g:, gs/, gv/) stay with their
// groups, their envelopes untouched; the sender's profile answers
// "deleted user" (services/users/erase.go).
//
// A step's reads are bounded by its writes (and, in 2., by the peer's
// dedupe keys, only while a sealed conversation is being erased), not by
// the peers' whole histories. A sealed message's m/ key (a pointer the
// sealer left) goes with its sync entries in 3.; its body stays inside
// its segment object until the sealer collects the object as an orphan.

// EraseAccount is the archive's part of erasing uid (an auth.Eraser):
// one bounded step, deterministic, only under r/arch/.
func (s *Service) EraseAccount(tx *badger.Txn, uid string, b *fsm.Budget) (done bool, after func(), err error) {
	// uid may be a user of another region (name@region, erased there:
	// bridge/region erasure.go): this region stored its direct
	// conversations with its users under the same keys, uid qualified.
	if wire.ValidPeerID(uid) != nil {
		return false, nil, fmt.Errorf("%w: bad uid %q", ErrBadCommand, uid)
	}
	peers, err := erasePeers(tx, uid)
	if err != nil {
		return false, nil, err
	}
	convs := make([]string, len(peers))
	for i, p := range peers {
		convs[i] = directConv(uid, p)
		s.st.sums.forget(convs[i]) // before its x/ goes (see summaryCache)
	}
	after = func() {
		for _, c := range convs {
			s.st.sums.forget(c)
		}
	}
	// 1. Unlisted for the peers.
	for _, p := range peers {
		if p == uid {
			continue
		}
		if done, err = eraseKey(tx, summaryKey(p, uid), b); err != nil || !done {
			return false, after, err
		}
	}
	// 2. The peers' retry records of sealed messages.
	for i, p := range peers {
		if p == uid {
			continue
		}
		sealed, err := anyKey(tx, segmentIndexPrefix(convs[i]))
		if err != nil || !sealed {
			if err != nil {
				return false, after, err
			}
			continue
		}
		conv := convs[i]
		done, err = fsm.DeleteMatching(tx, dedupPrefixOf(p), b, func(_, v []byte) (bool, error) {
			c, err := dedupConv(tx, p, v)
			return c == conv, err
		})
		if err != nil || !done {
			return false, after, err
		}
	}
	// 3. Both sides' sync entries.
	if done, err = eraseSyncPairs(tx, uid, b); err != nil || !done {
		return false, after, err
	}
	// 4. and 5., peer by peer.
	for _, p := range peers {
		if done, err = eraseConversation(tx, uid, p, b); err != nil || !done {
			return false, after, err
		}
	}
	// The user's own indexes, whatever is left of them.
	for _, prefix := range [][]byte{dedupPrefixOf(uid), cat([]byte("rc/" + uid + "/")), cat([]byte("i/" + uid + "/")),
		cat([]byte("w/" + uid + "/")), summaryPrefix(uid)} {
		if done, err = fsm.DeleteMatching(tx, prefix, b, nil); err != nil || !done {
			return false, after, err
		}
	}
	return true, after, nil
}

func dedupPrefixOf(uid string) []byte { return cat([]byte("dedup/" + uid + "/")) }

// segmentIndexPrefix is the sealed segments' index of a conversation
// (the sealer's layout: r/arch/sg/{convKey}/{lastID}).
func segmentIndexPrefix(conv string) []byte { return cat([]byte("sg/" + conv + "/")) }

// erasePeers lists the users uid has a direct conversation with (v/),
// uid itself included when it wrote to itself.
func erasePeers(tx *badger.Txn, uid string) ([]string, error) {
	prefix := summaryPrefix(uid)
	var peers []string
	it := tx.NewIterator(badger.IteratorOptions{Prefix: prefix})
	defer it.Close()
	for it.Rewind(); it.ValidForPrefix(prefix); it.Next() {
		peers = append(peers, string(it.Item().Key()[len(prefix):]))
	}
	return peers, nil
}

func anyKey(tx *badger.Txn, prefix []byte) (bool, error) {
	it := tx.NewIterator(badger.IteratorOptions{Prefix: prefix})
	defer it.Close()
	it.Rewind()
	return it.ValidForPrefix(prefix), nil
}

// eraseSyncPairs deletes uid's s/ entries and, for each, the peer's entry
// of the same message (same commit position), as far as b goes.
func eraseSyncPairs(tx *badger.Txn, uid string, b *fsm.Budget) (bool, error) {
	prefix := syncPrefix(uid)
	if b.Spent() {
		left, err := anyKey(tx, prefix)
		return !left, err
	}
	type entry struct{ key, val []byte }
	var entries []entry
	more := false
	it := tx.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: true})
	for it.Rewind(); it.ValidForPrefix(prefix); it.Next() {
		if 2*(len(entries)+1) > max(b.Left, 2) {
			more = true
			break
		}
		v, err := it.Item().ValueCopy(nil)
		if err != nil {
			it.Close()
			return false, err
		}
		entries = append(entries, entry{it.Item().KeyCopy(nil), v})
	}
	it.Close()
	for _, e := range entries {
		id, conv, ok := decodeLocator(uid, e.val)
		if ok && conv == "" { // the older layout: the conversation is in the m/ body
			var err error
			if conv, err = storedConv(tx, id); err != nil {
				return false, err
			}
		}
		// The m/ key of the message (a pointer, or the older layout's
		// body), which a sealed message keeps without its c/ key.
		if ok && conv != "" {
			if mc, err := storedConv(tx, id); err != nil {
				return false, err
			} else if mc == conv {
				b.Left--
				if err := tx.Delete(msgKey(id)); err != nil {
					return false, err
				}
			}
		}
		if peer := peerIn(conv, uid); peer != "" && peer != uid {
			pk := withID(syncPrefix(peer), tail8(e.key))
			if same, err := sameMessage(tx, pk, peer, id); err != nil {
				return false, err
			} else if same {
				b.Left--
				if err := tx.Delete(pk); err != nil {
					return false, err
				}
			}
		}
		b.Left--
		if err := tx.Delete(e.key); err != nil {
			return false, err
		}
	}
	return !more, nil
}

// peerIn is the other user of direct conversation conv ("d:a:b") of
// uid; "" for anything else.
func peerIn(conv, uid string) string {
	rest, ok := strings.CutPrefix(conv, "d:")
	if !ok {
		return ""
	}
	a, c, ok := strings.Cut(rest, ":")
	switch {
	case !ok:
		return ""
	case a == uid:
		return c
	case c == uid:
		return a
	}
	return ""
}

// sameMessage reports whether owner's sync entry key names message id.
func sameMessage(tx *badger.Txn, key []byte, owner string, id snowflake.ID) (bool, error) {
	it, err := tx.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	same := false
	err = it.Value(func(v []byte) error {
		got, _, ok := decodeLocator(owner, v)
		same = ok && got == id
		return nil
	})
	return same, err
}

// eraseConversation removes what is left of the direct conversation of
// uid and peer once the sync entries are gone (4. and 5. above), as far
// as b goes.
func eraseConversation(tx *badger.Txn, uid, peer string, b *fsm.Budget) (bool, error) {
	conv := directConv(uid, peer)
	if done, err := eraseHistory(tx, conv, uid, peer, b); err != nil || !done {
		return false, err
	}
	for _, prefix := range [][]byte{inboxPrefix(peer, uid), inboxPrefix(uid, peer), segmentIndexPrefix(conv), undeliverablePrefix(conv)} {
		if done, err := fsm.DeleteMatching(tx, prefix, b, nil); err != nil || !done {
			return false, err
		}
	}
	for _, k := range [][]byte{cursorKey(peer, conv), cursorKey(uid, conv), pairKey(conv), stateKey(peer, uid),
		stateKey(uid, peer), summaryKey(peer, uid)} {
		if done, err := eraseKey(tx, k, b); err != nil || !done {
			return false, err
		}
	}
	// Last: the entry that lists the peer.
	return eraseKey(tx, summaryKey(uid, peer), b)
}

// eraseKey deletes key if it exists; false when the budget is
// spent before.
func eraseKey(tx *badger.Txn, key []byte, b *fsm.Budget) (bool, error) {
	_, err := tx.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	return b.Delete(tx, key)
}

// eraseHistory deletes c/{conv}/ with each message's m/ key and, for a
// message of peer (not of uid, whose retry records go wholesale),
// peer's dedup/ entry of its cid (of "@" and its ID for a peer of
// another region, as the link stored it).
func eraseHistory(tx *badger.Txn, conv, uid, peer string, b *fsm.Budget) (bool, error) {
	prefix := convPrefix(conv)
	if b.Spent() {
		left, err := anyKey(tx, prefix)
		return !left, err
	}
	type msg struct {
		key  []byte
		body []byte // nil: the older layout (the body is under m/)
	}
	var msgs []msg
	more := false
	it := tx.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: true})
	for it.Rewind(); it.ValidForPrefix(prefix); it.Next() {
		if 3*(len(msgs)+1) > max(b.Left, 3) {
			more = true
			break
		}
		id := snowflake.ID(tail8(it.Item().Key()))
		body, err := bodyOf(it.Item(), conv, id)
		if err != nil {
			it.Close()
			return false, err
		}
		msgs = append(msgs, msg{it.Item().KeyCopy(nil), body})
	}
	it.Close()
	for _, m := range msgs {
		id := snowflake.ID(tail8(m.key))
		mk := msgKey(id)
		if peer != uid {
			body := m.body
			if body == nil {
				if v, err := tx.Get(mk); err == nil {
					if body, err = v.ValueCopy(nil); err != nil {
						return false, err
					}
				} else if !errors.Is(err, badger.ErrKeyNotFound) {
					return false, err
				}
			}
			var env struct{ From, CID string }
			if len(body) > 0 && body[0] == '{' && json.Unmarshal(body, &env) == nil && env.From == peer && (env.CID != "" || strings.IndexByte(peer, '@') >= 0) {
				cid := env.CID
				if strings.IndexByte(peer, '@') >= 0 {
					// A user of another region: the link's retry record
					// is keyed by the origin's ID (StartRemote), which is
					// its ID here (but for an ID clash, its last resort).
					cid = remoteCID(id)
				}
				if _, err := eraseKey(tx, dedupKey(peer, cid), fsm.NewBudget(1)); err != nil {
					return false, err
				}
				b.Left--
			}
		}
		if _, err := eraseKey(tx, mk, fsm.NewBudget(1)); err != nil {
			return false, err
		}
		b.Left -= 2
		if err := tx.Delete(m.key); err != nil {
			return false, err
		}
	}
	return !more, nil
}

// locatorConv is the conversation an s/ or dedup/ value of owner's key
// names: from the locator, or (an 8-byte value of the older layout) from
// the message's m/ body. "" when it cannot be told (kept, not guessed).
func locatorConv(tx *badger.Txn, owner string, v []byte) (string, error) {
	id, conv, ok := decodeLocator(owner, v)
	if !ok {
		return "", nil
	}
	if conv != "" {
		return conv, nil
	}
	return storedConv(tx, id)
}

// dedupConv is the conversation a dedup/ value of owner names: a direct
// message's refers to owner's s/ entry.
func dedupConv(tx *badger.Txn, owner string, v []byte) (string, error) {
	if len(v) != syncRefLen || v[0] != syncRefTag {
		return locatorConv(tx, owner, v)
	}
	it, err := tx.Get(withID(syncPrefix(owner), binary.BigEndian.Uint64(v[1:])))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	sv, err := it.ValueCopy(nil)
	if err != nil {
		return "", err
	}
	return locatorConv(tx, owner, sv)
}

// storedConv reads the conversation of message id from its m/ value: a
// pointer names it, an older-layout envelope has from and to (or group).
func storedConv(tx *badger.Txn, id snowflake.ID) (string, error) {
	it, err := tx.Get(msgKey(id))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	v, err := it.ValueCopy(nil)
	if err != nil {
		return "", err
	}
	if len(v) > 0 && v[0] == pointerTag {
		return string(v[1:]), nil
	}
	var e struct {
		From  string `json:"from"`
		To    string `json:"to"`
		Group string `json:"group"`
	}
	if json.Unmarshal(bytes.TrimSpace(v), &e) != nil {
		return "", nil
	}
	switch {
	case e.Group != "":
		return groupConv(e.Group), nil
	case e.From != "" && e.To != "" && !strings.ContainsAny(e.From+e.To, ":/"):
		return directConv(e.From, e.To), nil
	}
	return "", nil
}

// PeerRegions lists, sorted, the other regions of uid's direct peers
// (v/{uid}/{name@region}): the regions that stored their side of those
// conversations. Read inside an FSM transaction (replicated keys only).
func PeerRegions(tx *badger.Txn, uid string) ([]string, error) {
	peers, err := erasePeers(tx, uid)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, p := range peers {
		if _, r, ok := strings.Cut(p, "@"); ok && r != "" && !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	slices.Sort(out)
	return out, nil
}
