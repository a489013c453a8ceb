package archive

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/internal/snowflake"
	"github.com/edgechat/edgechat/internal/wire"
)

// What retention deletes besides the messages themselves (issue 11).
// Before the retention commands of a conversation (retention.go), the
// sweeper reads the messages about to expire, hot and sealed (the FSM
// reads no segment), and:
//
//  1. tells the media service which media they carry (Media.ExpireSent):
//     a media no newer message of the conversation carries is no longer
//     the conversation's, and one nobody may read any more is deleted
//     from every tier (services/media/expire.go);
//  2. proposes wire.CmdRetentionRefs with each message's (sender, cid),
//     in batches: the FSM deletes the dedupe key dedup/{from}/{cid} when
//     it still names that message (or a sync entry already gone), so a
//     cid retried after its message expired is stored as a new message;
//     for a sealed message whose key it deleted, the unread counts
//     change: a direct conversation's recipient's drops when the message
//     was above their cursor; a group sender's own count drops when it
//     was above the sender's cursor (see memberCursor.unread; the
//     group's Expired is counted by CmdRetention with the segments it
//     drops). Hot messages are counted off by CmdRetention itself. The
//     deleted key makes it exactly once: a repeated command finds no key
//     and changes nothing.
//
// Both happen before the messages are deleted, so a crash in between
// leaves expired messages whose media and retry records are already
// gone (the next sweep deletes them), never messages deleted with their
// media or dedupe keys forgotten.

// remoteCID is the retry record's cid of message id stored by a region
// link: "@" and the origin's ID (see StartRemote).
func remoteCID(id snowflake.ID) string { return "@" + id.String() }

// refsBatch bounds the messages of one CmdRetentionRefs.
const refsBatch = 1024

// expiringRef is a message that retention expires.
type expiringRef struct {
	ID     snowflake.ID
	Sealed bool
	From   string
	CID    string
}

// retentionRefsCmd is the payload of wire.CmdRetentionRefs.
type retentionRefsCmd struct {
	Conv   string
	Cutoff snowflake.ID
	Refs   []expiringRef
}

const refsVersion = 1

func (c *retentionRefsCmd) encode() []byte {
	b := []byte{refsVersion}
	b = appendStr(b, c.Conv)
	b = binary.BigEndian.AppendUint64(b, uint64(c.Cutoff))
	b = binary.AppendUvarint(b, uint64(len(c.Refs)))
	for _, r := range c.Refs {
		b = binary.BigEndian.AppendUint64(b, uint64(r.ID))
		flag := byte(0)
		if r.Sealed {
			flag = 1
		}
		b = append(b, flag)
		b = appendStr(b, r.From)
		b = appendStr(b, r.CID)
	}
	return b
}

func decodeRetentionRefsCmd(b []byte) (retentionRefsCmd, error) {
	bad := fmt.Errorf("%w: retention refs", ErrBadCommand)
	rd, conv, cutoff, err := readRetentionHead(b, refsVersion, "retention refs")
	if err != nil {
		return retentionRefsCmd{}, err
	}
	c := retentionRefsCmd{Conv: conv, Cutoff: cutoff}
	n, k := binary.Uvarint(rd.b)
	if k <= 0 || n > refsBatch {
		return retentionRefsCmd{}, bad
	}
	rd.b = rd.b[k:]
	c.Refs = make([]expiringRef, 0, n)
	for range n {
		var r expiringRef
		r.ID = snowflake.ID(rd.u64())
		if rd.err || len(rd.b) < 1 || rd.b[0] > 1 {
			return retentionRefsCmd{}, bad
		}
		r.Sealed = rd.b[0] == 1
		rd.b = rd.b[1:]
		r.From, r.CID = rd.str(), rd.str()
		if rd.err || r.ID >= c.Cutoff || r.CID == "" || len(r.CID) > wire.MaxCIDLen {
			return retentionRefsCmd{}, bad
		}
		if wire.ValidUserID(r.From) != nil && (wire.ValidPeerID(r.From) != nil || r.CID != remoteCID(r.ID)) {
			return retentionRefsCmd{}, bad // a sender of another region: only the link's key of that message
		}
		c.Refs = append(c.Refs, r)
	}
	if len(rd.b) != 0 {
		return retentionRefsCmd{}, bad
	}
	return c, nil
}

// refsApplied is the FSM's result of a CmdRetentionRefs.
type refsApplied struct {
	Dedup, Unread int // dedupe keys deleted, unread counts taken off

	cache *summaryCache
	pair  pairWrite // the direct summary written (conv "" for none)
}

// AfterCommit gives the summary written to the cache, after any that a
// message earlier in the same entry gave (see expired.AfterCommit).
func (r *refsApplied) AfterCommit() {
	if r.pair.conv != "" {
		r.cache.committed(r.pair)
	}
}

func applyRetentionRefs(tx *badger.Txn, payload []byte, st *fsmState) (any, error) {
	c, err := decodeRetentionRefsCmd(payload)
	if err != nil {
		return nil, err
	}
	direct := !isGroupConv(c.Conv)
	var p pair
	var found bool
	var lo, hi string
	var late [2]uint64
	if direct {
		if p, found, err = getPair(tx, c.Conv); err != nil {
			return nil, err
		}
		lo, hi = directUsers(c.Conv)
	}
	res := &refsApplied{}
	// Every read before the first write.
	var del [][]byte
	own := map[string][]snowflake.ID{} // a group's sealed expired messages by sender
	var senders []string
	for _, r := range c.Refs {
		dk := dedupKey(r.From, r.CID)
		id, conv, ok, err := getLocator(tx, r.From, dk)
		if errors.Is(err, ErrBadCommand) {
			continue // a value this version cannot read is never ours to judge
		}
		if err != nil {
			return nil, err
		}
		if !ok || (id != 0 && (id != r.ID || (conv != "" && conv != c.Conv))) {
			continue // gone already, or another message's
		}
		del = append(del, dk)
		if !direct && r.Sealed {
			if _, ok := own[r.From]; !ok {
				senders = append(senders, r.From)
			}
			own[r.From] = append(own[r.From], r.ID)
		}
		if direct && found && r.Sealed {
			reader := 1
			if r.From != lo {
				reader = 0
			}
			switch {
			case r.ID > p.Cursor[reader] && p.Unread[reader] > 0 && p.Unread[reader] < unreadCap:
				p.Unread[reader]--
				res.Unread++
			case r.ID <= p.Cursor[reader]:
				late[reader]++ // may have counted as unread below the cursor (retention.go)
			}
		}
	}
	if late != [2]uint64{} {
		before := p.Unread
		if err := dropLateUnread(tx, c.Conv, &p, late, [2]string{lo, hi}); err != nil {
			return nil, err
		}
		res.Unread += int(before[0] - p.Unread[0] + before[1] - p.Unread[1])
	}
	for _, k := range del {
		if err := tx.Delete(k); err != nil {
			return nil, err
		}
	}
	res.Dedup = len(del)
	if err := expireOwn(tx, c.Conv, senders, own); err != nil {
		return nil, err
	}
	if res.Unread > 0 {
		st.sums.forget(c.Conv)
		if err := tx.Set(pairKey(c.Conv), p.encode()); err != nil {
			return nil, err
		}
		res.cache, res.pair = st.sums, pairWrite{conv: c.Conv, p: p}
	}
	return res, nil
}

// expireReadMax bounds the expiring messages the sweeper reads per
// conversation and sweep (Service.expireReadMax; tests make it small).
const expireReadMax = 1 << 16

// expiring reads the oldest messages of conv below cutoff, hot and
// sealed, at most about max of them (whole segments: at least one):
// their retry records and the media they carry. upTo is the cutoff of
// what it read (cutoff, or lower when there was more): the sweep expires
// up to there and the next sweep goes on.
func (s *Service) expiring(ctx context.Context, conv string, cutoff snowflake.ID, max int, st *RetentionStats) (refs []expiringRef, media []string, sealedIDs []snowflake.ID, upTo snowflake.ID, err error) {
	upTo = cutoff
	seen := map[string]bool{}
	add := func(id snowflake.ID, sealed bool, body []byte) {
		var env struct {
			From  string `json:"from"`
			CID   string `json:"cid"`
			Media *struct {
				ID string `json:"id"`
			} `json:"media"`
		}
		if json.Unmarshal(body, &env) != nil {
			return
		}
		switch {
		case env.CID != "" && wire.ValidUserID(env.From) == nil && len(env.CID) <= wire.MaxCIDLen:
			refs = append(refs, expiringRef{ID: id, Sealed: sealed, From: env.From, CID: env.CID})
		case strings.IndexByte(env.From, '@') >= 0 && wire.ValidPeerID(env.From) == nil:
			// A message a region link stored: its retry record is keyed
			// by the origin's ID (StartRemote), which is its ID here.
			refs = append(refs, expiringRef{ID: id, Sealed: sealed, From: env.From, CID: remoteCID(id)})
		}
		if env.Media != nil && env.Media.ID != "" && !seen[env.Media.ID] {
			seen[env.Media.ID] = true
			media = append(media, env.Media.ID)
		}
	}
	type hotMsg struct {
		id   snowflake.ID
		body []byte
	}
	var segs []SegmentRef
	var hot []hotMsg
	err = s.db.View(func(tx *badger.Txn) error {
		// Sealed messages are older than hot ones but for stragglers: the
		// oldest segments first, then the oldest hot messages below them.
		sp := segIndexPrefix(conv)
		si := tx.NewIterator(badger.IteratorOptions{Prefix: sp})
		defer si.Close()
		n := 0
		for si.Seek(sp); si.ValidForPrefix(sp); si.Next() {
			ref, err := segRefOf(si.Item())
			if err != nil {
				return err
			}
			if ref.FirstID >= upTo {
				break
			}
			if len(segs) > 0 && n+ref.Count > max {
				upTo = ref.FirstID
				break
			}
			segs = append(segs, ref)
			n += ref.Count
		}
		prefix := convPrefix(conv)
		it := tx.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		for it.Seek(prefix); it.ValidForPrefix(prefix); it.Next() {
			id := snowflake.ID(tail8(it.Item().Key()))
			if id >= upTo {
				break
			}
			if n >= max && (len(segs) > 0 || len(hot) > 0) {
				upTo = id
				break
			}
			body, err := bodyOf(it.Item(), conv, id)
			if err != nil {
				return err
			}
			if body == nil { // the older layout: the body is under m/
				if v, err := tx.Get(msgKey(id)); err == nil {
					if body, err = v.ValueCopy(nil); err != nil {
						return err
					}
				} else if !errors.Is(err, badger.ErrKeyNotFound) {
					return err
				}
			}
			hot = append(hot, hotMsg{id, body})
			n++
		}
		return nil
	})
	if err != nil {
		return nil, nil, nil, 0, err
	}
	if s.tier != nil {
		for _, ref := range segs {
			msgs, _, err := s.tier.below(ctx, ref, ref.LastID+1, ref.Count, nil)
			if errors.Is(err, ErrSegmentCorrupt) || errors.Is(err, ErrSegmentMissing) {
				// Expired anyway: it goes, and what its messages referred
				// to (media, retry records) stays behind, said here.
				s.log.Warn("retention: an expired segment cannot be read; its messages' media and retry records are not deleted",
					"segment", ref.Key, "messages", ref.Count, "err", err)
				st.Unreadable++
				continue
			}
			if err != nil {
				return nil, nil, nil, 0, fmt.Errorf("archive: retention: reading %s: %w", ref.Key, err)
			}
			for i := len(msgs) - 1; i >= 0; i-- { // below gives newest first
				if msgs[i].ID >= upTo {
					continue
				}
				body, err := expandSealed(conv, msgs[i].ID, msgs[i].Body)
				if err != nil {
					return nil, nil, nil, 0, fmt.Errorf("archive: retention: reading %s: %w", ref.Key, err)
				}
				add(msgs[i].ID, true, body)
				sealedIDs = append(sealedIDs, msgs[i].ID)
			}
		}
	}
	for _, h := range hot {
		if h.id < upTo {
			add(h.id, false, h.body)
		}
	}
	return refs, media, sealedIDs, upTo, nil
}

// expireRefs does steps 1 and 2 above for conv's oldest messages below
// cutoff, and returns the cutoff up to which it did (see expiring).
func (s *Service) expireRefs(ctx context.Context, conv string, cutoff snowflake.ID, st *RetentionStats) (snowflake.ID, error) {
	limit := s.expireReadMax
	if limit <= 0 {
		limit = expireReadMax
	}
	refs, media, sealedIDs, upTo, err := s.expiring(ctx, conv, cutoff, limit, st)
	if err != nil {
		return 0, err
	}
	if len(media) > 0 && s.media != nil {
		a, b, gid := "", "", ""
		if isGroupConv(conv) {
			gid = conv[2:]
		} else {
			a, b = directUsers(conv)
		}
		if err := s.media.ExpireSent(ctx, a, b, gid, upTo, media); err != nil {
			return 0, fmt.Errorf("archive: retention of %s: media: %w", conv, err)
		}
		st.Media += len(media)
	}
	// The messages of senders of other regions go in commands of their
	// own: a node of an earlier version refuses a command naming one
	// (it expired only local senders' records), and must still apply
	// the others alike.
	local := slices.DeleteFunc(slices.Clone(refs), func(r expiringRef) bool { return strings.IndexByte(r.From, '@') >= 0 })
	refs = append(local, slices.DeleteFunc(refs, func(r expiringRef) bool { return strings.IndexByte(r.From, '@') < 0 })...)
	for len(refs) > 0 {
		n := min(len(refs), refsBatch)
		if len(local) > 0 {
			n = min(n, len(local))
			local = local[n:]
		}
		cmd := retentionRefsCmd{Conv: conv, Cutoff: upTo, Refs: refs[:n]}
		refs = refs[n:]
		v, err := s.prop.Propose(ctx, wire.CmdRetentionRefs, cmd.encode())
		if err != nil {
			return 0, fmt.Errorf("archive: retention of %s: dedupe keys: %w", conv, err)
		}
		st.Commands++
		if r, ok := v.(*refsApplied); ok {
			st.Dedup += r.Dedup
		}
	}
	if err := s.expirePointers(ctx, conv, upTo, sealedIDs, st); err != nil {
		return 0, err
	}
	return upTo, nil
}
