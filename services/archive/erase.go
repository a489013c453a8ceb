package archive

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/internal/snowflake"
	"github.com/edgechat/edgechat/internal/wire"
)

// Erasing an account (issue 11; the command is auth's CmdAccountErase,
// see services/auth/delete.go, which calls EraseAccount in every step).
//
// Every direct conversation of the user goes, both sides: for each peer
// (listed by v/{uid}/), in this order, so that a step cut short by its
// budget resumes where it stopped:
//
//  1. the peer's dedup/ entries of messages to the user (found through
//     what they refer to: the peer's s/ entry, a locator, or the older
//     layout's m/ body), before
//  2. the peer's s/ entries of the conversation (the older layout's 8-byte
//     entries are judged by their m/ body, which goes with them);
//  3. the conversation's history c/{convKey}/ with the m/ key of each
//     message (a pointer, or the body in the older layout);
//  4. i/ of both sides, rc/ of both sides, x/, w/ of both sides, v/ of the
//     peer, and the sealed segments' index r/arch/sg/{convKey}/ (the
//     sealer collects the objects it no longer references);
//  5. v/{uid}/{peer} last: while it exists the peer is visited again.
//
// Then the user's own keys: every s/{uid}/, dedup/{uid}/ (group
// messages' too: nobody sends as the user again), rc/{uid}/ (group
// cursors too), i/{uid}/, w/{uid}/ and v/{uid}/. Group messages (c/g:,
// gs/, gv/) stay with their groups, their envelopes untouched; the
// sender's profile answers "deleted user" (services/users/erase.go).
//
// Not reached: an m/ pointer of a message whose c/ key the sealer has
// already deleted (it names the conversation, not its content). Its s/
// entries are reached, as is everything the reads of the peer use.

// EraseAccount is the archive's part of erasing uid (an auth.Eraser):
// one bounded step, deterministic, only under r/arch/.
func (s *Service) EraseAccount(tx *badger.Txn, uid string, b *fsm.Budget) (done bool, after func(), err error) {
	if wire.ValidUserID(uid) != nil {
		return false, nil, fmt.Errorf("%w: bad uid %q", ErrBadCommand, uid)
	}
	var convs []string
	after = func() {
		for _, c := range convs {
			s.st.sums.forget(c)
		}
	}
	peers, err := erasePeers(tx, uid)
	if err != nil {
		return false, after, err
	}
	for _, peer := range peers {
		conv := directConv(uid, peer)
		convs = append(convs, conv)
		s.st.sums.forget(conv) // before its x/ goes (see summaryCache)
		if done, err = eraseConversation(tx, uid, peer, b); err != nil || !done {
			return false, after, err
		}
	}
	// The user's own indexes, whatever is left of them.
	if done, err = eraseSync(tx, uid, "", b); err != nil || !done {
		return false, after, err
	}
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
// (the lead's layout: r/arch/sg/{convKey}/{lastID}).
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

// eraseConversation removes the direct conversation of uid and peer,
// both sides (steps 1 to 5 above), as far as b goes.
func eraseConversation(tx *badger.Txn, uid, peer string, b *fsm.Budget) (bool, error) {
	conv := directConv(uid, peer)
	// 1. The peer's dedupe entries of messages in conv (uid's own go
	// wholesale later). Not for a conversation with oneself: those are
	// uid's and go with dedup/{uid}/.
	if peer != uid {
		done, err := fsm.DeleteMatching(tx, dedupPrefixOf(peer), b, func(_, v []byte) (bool, error) {
			c, err := dedupConv(tx, peer, v)
			return c == conv, err
		})
		if err != nil || !done {
			return false, err
		}
		// 2. The peer's sync entries of conv.
		if done, err = eraseSync(tx, peer, uid, b); err != nil || !done {
			return false, err
		}
	}
	// 3. The history, with each message's m/ key.
	if done, err := eraseHistory(tx, conv, b); err != nil || !done {
		return false, err
	}
	// 4. Summaries, cursors, older indexes, the segment index.
	for _, prefix := range [][]byte{inboxPrefix(peer, uid), inboxPrefix(uid, peer), segmentIndexPrefix(conv)} {
		if done, err := fsm.DeleteMatching(tx, prefix, b, nil); err != nil || !done {
			return false, err
		}
	}
	for _, k := range [][]byte{cursorKey(peer, conv), cursorKey(uid, conv), pairKey(conv), stateKey(peer, uid),
		stateKey(uid, peer), summaryKey(peer, uid)} {
		if done, err := deleteIfPresent(tx, k, b); err != nil || !done {
			return false, err
		}
	}
	// 5. Last: the entry that lists the peer.
	return deleteIfPresent(tx, summaryKey(uid, peer), b)
}

// deleteIfPresent deletes key if it exists; false when the budget is
// spent before.
func deleteIfPresent(tx *badger.Txn, key []byte, b *fsm.Budget) (bool, error) {
	_, err := tx.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	return b.Delete(tx, key)
}

// eraseHistory deletes c/{conv}/ and the m/ key of each message.
func eraseHistory(tx *badger.Txn, conv string, b *fsm.Budget) (bool, error) {
	prefix := convPrefix(conv)
	var keys [][]byte
	more := false
	it := tx.NewIterator(badger.IteratorOptions{Prefix: prefix})
	for it.Rewind(); it.ValidForPrefix(prefix); it.Next() {
		if 2*(len(keys)+1) > b.Left {
			more = true
			break
		}
		keys = append(keys, it.Item().KeyCopy(nil))
	}
	it.Close()
	for _, k := range keys {
		if _, err := deleteIfPresent(tx, msgKey(snowflake.ID(tail8(k))), b); err != nil {
			return false, err
		}
		if _, err := b.Delete(tx, k); err != nil {
			return false, err
		}
	}
	return !more, nil
}

// eraseSync deletes owner's s/ entries of its conversation with peer
// ("": every entry), and the m/ body of an older-layout entry.
func eraseSync(tx *badger.Txn, owner, peer string, b *fsm.Budget) (bool, error) {
	conv := ""
	if peer != "" {
		conv = directConv(owner, peer)
	}
	var bodies [][]byte // m/ keys of older-layout entries deleted with them
	done, err := fsm.DeleteMatching(tx, syncPrefix(owner), b, func(_, v []byte) (bool, error) {
		if conv != "" {
			c, err := locatorConv(tx, owner, v)
			if err != nil || c != conv {
				return false, err
			}
		}
		if len(v) == 8 {
			bodies = append(bodies, msgKey(snowflake.ID(binary.BigEndian.Uint64(v))))
		}
		return true, nil
	})
	if err != nil {
		return false, err
	}
	for _, k := range bodies {
		if _, err := tx.Get(k); err == nil {
			b.Left--
			if err := tx.Delete(k); err != nil {
				return false, err
			}
		}
	}
	return done, nil
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
