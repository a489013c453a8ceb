package archive

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/internal/snowflake"
	"github.com/edgechat/edgechat/internal/wire"
	"github.com/edgechat/edgechat/services/archive/segment"
)

// Retention (issue 11). Messages older than the server's retention
// (--retention-days) or their group's (the shorter of the two) are
// deleted from both tiers by a replicated command per conversation,
// wire.CmdRetention: the FSM deletes the conversation's hot messages
// below the cutoff ID (with their m/ keys), the sync index entries below
// it (s/ of both users of a direct conversation: direct conversations
// all share the server's cutoff; gs/ of a group), and the index entries
// of segments wholly below it. A segment that straddles the cutoff is
// rewritten by the leader without the expired messages and the command
// carries its replacement (uploaded and read back first, or inline for
// stores that are not shared); the old object becomes an orphan and is
// garbage-collected. Each command does a bounded amount of work; the
// sweeper repeats it until nothing is left below the cutoff.
//
// Before it, the sweeper deletes what the expiring messages refer to
// (retentionrefs.go): their media, their dedupe keys, and for sealed
// ones their part of the unread counts.
//
// Kept: conversation summaries (a conversation whose messages all
// expired drops out of the conversation list until its next message),
// read cursors. Unread counts: a direct conversation's drop by the
// expired hot messages here (sealed ones: retentionrefs.go); a group's
// summary counts the expired messages (Expired, hot, whole segments and
// the straddler's part) and each sender's record its own expired ones,
// so that every member's count drops by the expired messages above the
// member's cursor (see memberCursor.unread).

// retentionBatch bounds the keys one retention command deletes per kind.
const retentionBatch = 2048

// retentionCmd is the payload of wire.CmdRetention.
type retentionCmd struct {
	Conv    string
	Cutoff  snowflake.ID // messages with lower IDs expire
	Replace *sealCmd     // the straddling segment rewritten without the expired messages
	OldKey  string       // the object Replace replaces
}

func (c *retentionCmd) encode() []byte {
	b := append([]byte{segVersion}, nil...)
	b = appendStr(b, c.Conv)
	b = binary.BigEndian.AppendUint64(b, uint64(c.Cutoff))
	if c.Replace == nil {
		return append(b, 0)
	}
	b = append(b, 1)
	b = appendStr(b, c.OldKey)
	return append(b, c.Replace.encode()...)
}

// readRetentionHead reads what every retention command starts with: its
// version, a valid conversation and a cutoff (not 0); rd holds the rest.
func readRetentionHead(b []byte, version byte, what string) (rd reader, conv string, cutoff snowflake.ID, err error) {
	if len(b) < 1 || b[0] != version {
		return rd, "", 0, fmt.Errorf("%w: unknown %s version", ErrBadCommand, what)
	}
	rd = reader{b: b[1:]}
	conv = rd.str()
	cutoff = snowflake.ID(rd.u64())
	if rd.err || cutoff == 0 {
		return rd, "", 0, fmt.Errorf("%w: %s", ErrBadCommand, what)
	}
	if _, err := SegmentObjectKey(conv, 1, 1); err != nil {
		return rd, "", 0, err
	}
	return rd, conv, cutoff, nil
}

func decodeRetentionCmd(b []byte) (retentionCmd, error) {
	var c retentionCmd
	rd, conv, cutoff, err := readRetentionHead(b, segVersion, "retention command")
	if err != nil {
		return retentionCmd{}, err
	}
	c.Conv, c.Cutoff = conv, cutoff
	if len(rd.b) < 1 {
		return retentionCmd{}, fmt.Errorf("%w: retention", ErrBadCommand)
	}
	has := rd.b[0]
	rd.b = rd.b[1:]
	switch has {
	case 0:
		if len(rd.b) != 0 {
			return retentionCmd{}, fmt.Errorf("%w: retention", ErrBadCommand)
		}
	case 1:
		c.OldKey = rd.str()
		if rd.err {
			return retentionCmd{}, fmt.Errorf("%w: retention", ErrBadCommand)
		}
		r, err := decodeSealCmd(rd.b)
		if err != nil {
			return retentionCmd{}, err
		}
		if r.Ref.Conv != c.Conv || r.Ref.FirstID < c.Cutoff {
			return retentionCmd{}, fmt.Errorf("%w: retention: the replacement segment is of another range", ErrBadCommand)
		}
		c.Replace = &r
	default:
		return retentionCmd{}, fmt.Errorf("%w: retention", ErrBadCommand)
	}
	return c, nil
}

// expired is the FSM's result of a retention command.
type expired struct {
	Hot, Sync, Segments int  // deleted
	More                bool // a batch was full: run again

	cache *summaryCache
	pair  pairWrite // the direct summary written (conv "" for none)
}

// AfterCommit gives the summary written to the cache: a message of the
// same conversation earlier in the entry put its own (pre-retention)
// summary there, and results run in order, so this one must follow.
func (e *expired) AfterCommit() {
	if e.pair.conv != "" {
		e.cache.committed(e.pair)
	}
}

func applyRetention(tx *badger.Txn, payload []byte, st *fsmState) (any, error) {
	c, err := decodeRetentionCmd(payload)
	if err != nil {
		return nil, err
	}
	var res expired
	// Hot messages below the cutoff, oldest first.
	prefix := convPrefix(c.Conv)
	type gone struct {
		id   snowflake.ID
		from string
	}
	var hot []gone
	{
		it := tx.NewIterator(badger.IteratorOptions{Prefix: prefix})
		for it.Seek(prefix); it.ValidForPrefix(prefix) && len(hot) < retentionBatch; it.Next() {
			id := snowflake.ID(tail8(it.Item().Key()))
			if id >= c.Cutoff {
				break
			}
			var from string
			if err := it.Item().Value(func(v []byte) error {
				f, _, _, _ := readBody(c.Conv, id, v, false)
				from = string(f)
				return nil
			}); err != nil {
				it.Close()
				return nil, err
			}
			hot = append(hot, gone{id, from})
		}
		it.Close()
	}
	res.More = len(hot) == retentionBatch
	for _, m := range hot {
		if err := tx.Delete(convKey(c.Conv, m.id)); err != nil {
			return nil, err
		}
		if err := deleteIfPresent(tx, msgKey(m.id)); err != nil {
			return nil, err
		}
	}
	res.Hot = len(hot)
	// Unread counts of a direct conversation: an expired message from one
	// side above the other side's cursor is no longer unread.
	if len(hot) > 0 && !isGroupConv(c.Conv) {
		p, found, err := getPair(tx, c.Conv)
		if err != nil {
			return nil, err
		}
		if found {
			lo, hi := directUsers(c.Conv)
			var late [2]uint64
			for _, m := range hot {
				reader := 1 // the side that received it
				if m.from != lo {
					reader = 0
				}
				switch {
				case m.id > p.Cursor[reader] && p.Unread[reader] > 0 && p.Unread[reader] < unreadCap:
					p.Unread[reader]--
				case m.id <= p.Cursor[reader]:
					late[reader]++ // may have counted as unread below the cursor
				}
			}
			if err := dropLateUnread(tx, c.Conv, &p, late, [2]string{lo, hi}); err != nil {
				return nil, err
			}
			st.sums.forget(c.Conv)
			if err := tx.Set(pairKey(c.Conv), p.encode()); err != nil {
				return nil, err
			}
			res.cache, res.pair = st.sums, pairWrite{conv: c.Conv, p: p}
		}
	}
	// A group's senders: their own expired messages above their cursors
	// stop counting as their own (see memberCursor.unread).
	if len(hot) > 0 && isGroupConv(c.Conv) {
		own := map[string][]snowflake.ID{}
		var senders []string
		for _, m := range hot {
			if _, ok := own[m.from]; !ok {
				senders = append(senders, m.from)
			}
			own[m.from] = append(own[m.from], m.id)
		}
		if err := expireOwn(tx, c.Conv, senders, own); err != nil {
			return nil, err
		}
	}
	deleted := uint64(len(hot)) // messages deleted, for a group's count
	// Sync index entries below the cutoff.
	var syncPrefixes [][]byte
	if isGroupConv(c.Conv) {
		syncPrefixes = [][]byte{groupSyncPrefix(c.Conv[2:])}
	} else {
		a, b := directUsers(c.Conv)
		syncPrefixes = [][]byte{syncPrefix(a)}
		if b != a {
			syncPrefixes = append(syncPrefixes, syncPrefix(b))
		}
	}
	for _, sp := range syncPrefixes {
		n, more, err := deleteSyncBelow(tx, sp, c.Cutoff)
		if err != nil {
			return nil, err
		}
		res.Sync += n
		res.More = res.More || more
	}
	// Segments wholly below the cutoff.
	sp := segIndexPrefix(c.Conv)
	var drop [][]byte
	{
		it := tx.NewIterator(badger.IteratorOptions{Prefix: sp})
		for it.Seek(sp); it.ValidForPrefix(sp) && len(drop) < retentionBatch; it.Next() {
			if snowflake.ID(tail8(it.Item().Key())) >= c.Cutoff {
				break
			}
			ref, err := segRefOf(it.Item())
			if err != nil {
				it.Close()
				return nil, err
			}
			deleted += uint64(ref.Count)
			drop = append(drop, it.Item().KeyCopy(nil))
		}
		it.Close()
	}
	for _, k := range drop {
		if err := tx.Delete(k); err != nil {
			return nil, err
		}
	}
	res.Segments = len(drop)
	res.More = res.More || len(drop) == retentionBatch
	// The undeliverable marks of the expired messages.
	{
		more, err := deleteUndeliverableBelow(tx, c.Conv, c.Cutoff)
		if err != nil {
			return nil, err
		}
		res.More = res.More || more
	}
	// The straddling segment's replacement, if it still replaces what is
	// indexed (a stale replacement changes nothing; its object is an orphan).
	if r := c.Replace; r != nil {
		ik := segIndexKey(c.Conv, r.Ref.LastID)
		item, err := tx.Get(ik)
		if err == nil {
			old, err := segRefOf(item)
			if err != nil {
				return nil, err
			}
			if old.Key == c.OldKey && old.FirstID < c.Cutoff {
				if err := tx.Set(ik, r.Ref.encodeIndex()); err != nil {
					return nil, err
				}
				deleted += uint64(max(old.Count-r.Ref.Count, 0))
				res.Segments++
				if len(r.Inline) > 0 && st.segments != nil && !st.segments.Shared() {
					if err := putSegment(st.segments, r.Ref.Key, r.Inline); err != nil {
						panic(fmt.Sprintf("archive: writing segment %s: %v", r.Ref.Key, err))
					}
				}
			}
		} else if !errors.Is(err, badger.ErrKeyNotFound) {
			return nil, err
		}
	}
	// A group that counts its messages from the first counts these out.
	if deleted > 0 && isGroupConv(c.Conv) {
		gk := groupSummaryKey(c.Conv[2:])
		gsum, found, err := getSummary(tx, gk)
		if err != nil {
			return nil, err
		}
		if found && gsum.Kept && gsum.Complete {
			gsum.Expired += deleted
			if err := tx.Set(gk, gsum.encodeGroup()); err != nil {
				return nil, err
			}
		}
	}
	return &res, nil
}

// expireOwn takes the expired messages of each sender of a group (ids by
// sender, senders in a deterministic order) that were above the
// sender's cursor off the sender's own count: they were counted in both
// the messages above the cursor and the sender's own, and the group's
// Expired takes them off the first (see memberCursor.unread).
//
// A group whose count began late keeps its counts as they are (see
// memberCursor.unread): taking a sender's expired messages off Own there
// would make them unread to the sender.
func expireOwn(tx *badger.Txn, conv string, senders []string, ids map[string][]snowflake.ID) error {
	if len(senders) == 0 {
		return nil
	}
	gsum, found, err := getSummary(tx, groupSummaryKey(conv[2:]))
	if err != nil || !found || !gsum.Kept || !gsum.Complete {
		return err
	}
	for _, from := range senders {
		if wire.ValidUserID(from) != nil {
			continue
		}
		ck := cursorKey(from, conv)
		rec, found, err := getMemberCursor(tx, ck)
		if err != nil {
			return err
		}
		if !found || !rec.Kept {
			continue // counted by walking the history: nothing to correct
		}
		n := uint64(0)
		for _, id := range ids[from] {
			if id > rec.UpTo {
				n++
			}
		}
		if n == 0 {
			continue
		}
		rec.Own -= n
		if err := tx.Set(ck, rec.encode()); err != nil {
			return err
		}
	}
	return nil
}

// deleteSyncBelow deletes the entries of a sync index (s/ or gs/) from
// its start while their message IDs are below cutoff (commit order is
// close to ID order; an entry of an older ID committed later stays and
// sync skips its message once it is gone).
func deleteSyncBelow(tx *badger.Txn, prefix []byte, cutoff snowflake.ID) (n int, more bool, err error) {
	var keys [][]byte
	it := tx.NewIterator(badger.IteratorOptions{Prefix: prefix})
	for it.Seek(prefix); it.ValidForPrefix(prefix); it.Next() {
		if len(keys) == retentionBatch {
			more = true
			break
		}
		var id snowflake.ID
		if err := it.Item().Value(func(v []byte) error {
			if len(v) >= 8 {
				id = snowflake.ID(binary.BigEndian.Uint64(v))
			}
			return nil
		}); err != nil {
			it.Close()
			return 0, false, err
		}
		if id >= cutoff {
			break
		}
		keys = append(keys, it.Item().KeyCopy(nil))
	}
	it.Close()
	for _, k := range keys {
		if err := tx.Delete(k); err != nil {
			return 0, false, err
		}
	}
	return len(keys), more, nil
}

func deleteIfPresent(tx *badger.Txn, k []byte) error {
	if _, err := tx.Get(k); errors.Is(err, badger.ErrKeyNotFound) {
		return nil
	} else if err != nil {
		return err
	}
	return tx.Delete(k)
}

func isGroupConv(conv string) bool { return len(conv) > 2 && conv[:2] == "g:" }

// directUsers are the two users of a direct conversation key.
func directUsers(conv string) (lo, hi string) {
	rest := conv[2:]
	for i := 0; i < len(rest); i++ {
		if rest[i] == ':' {
			return rest[:i], rest[i+1:]
		}
	}
	return rest, rest
}

// RetentionPolicy says how long messages are kept.
type RetentionPolicy struct {
	// Days of the server (0: forever).
	Days int
	// GroupDays is a group's own retention (0: the server's); the shorter
	// of the two applies. Nil: groups have none of their own.
	GroupDays func(gid string) int
	// StraddlerLag: how long past the cutoff the oldest message of the
	// segment straddling it may stay before the segment is rewritten
	// without its expired messages; 0: straddlerLag's (a tenth of the
	// retention, at most a day); negative: at once (tests).
	StraddlerLag time.Duration
}

// cutoffFor is the retention cutoff of conv as of now (0: keep all).
func (p RetentionPolicy) cutoffFor(conv string, now time.Time) snowflake.ID {
	days := p.Days
	if isGroupConv(conv) && p.GroupDays != nil {
		if g := p.GroupDays(conv[2:]); g > 0 && (days == 0 || g < days) {
			days = g
		}
	}
	if days <= 0 {
		return 0
	}
	at := now.Add(-time.Duration(days) * 24 * time.Hour)
	if !at.After(snowflake.Epoch) {
		return 0
	}
	return snowflake.Make(uint64(at.Sub(snowflake.Epoch).Milliseconds()), 0, 0)
}

// RetentionStats counts what a retention sweep deleted.
type RetentionStats struct {
	Commands, Hot, Sync, Segments, Rewritten int
	// Media: media IDs the expired messages carried (told to the media
	// service); Dedup: dedupe keys deleted; Unreadable: expired segments
	// that could not be read (damaged or missing), dropped without.
	Media, Dedup, Unreadable int
	// Failed: conversations skipped this sweep after an error (logged).
	// KeptWhole: segments straddling the cutoff that could not be read,
	// kept whole (their conversation expires only what is below them).
	Failed, KeptWhole int
	// Pointers: m/ pointers of expired sealed messages deleted.
	Pointers int
}

// ExpireOnce runs one retention sweep as of now (on the leader): for
// every conversation with hot or sealed messages below its cutoff, the
// commands that delete them.
func (s *Service) ExpireOnce(ctx context.Context, p RetentionPolicy, now time.Time) (RetentionStats, error) {
	var st RetentionStats
	if p.Days <= 0 && p.GroupDays == nil {
		return st, nil
	}
	convs, err := s.archivedConversations()
	if err != nil {
		return st, err
	}
	// One conversation that cannot be expired must not stop the others:
	// it is logged and left for the next sweep. A segment store that
	// cannot be reached would fail every conversation with sealed
	// messages to expire alike, each after waiting out the S3 client's
	// retries: once one met it, those are left for the next sweep
	// unasked, and the others (all their expiring messages hot) go on.
	var errs []error
	var down error
	left := 0
	for conv, oldest := range convs {
		cutoff := p.cutoffFor(conv, now)
		if cutoff == 0 || oldest >= cutoff {
			continue
		}
		if cutoff, err = s.spareYoungStraddler(conv, cutoff, now, p.StraddlerLag); err != nil {
			s.log.Warn("retention skipped a conversation", "conv", conv, "err", err)
			st.Failed++
			continue
		}
		if oldest >= cutoff {
			continue // only a straddler's messages expired, and not long ago
		}
		if down != nil {
			if sealed, err := s.sealedBefore(conv, cutoff); err != nil || sealed {
				left++
				continue
			}
		}
		if err := s.expireConversation(ctx, conv, cutoff, &st); err != nil {
			if sweepAborted(ctx, err) {
				s.metrics.expired.Add(float64(st.Hot))
				return st, err
			}
			if storeDown(err) && down == nil {
				down = err
			}
			s.log.Warn("retention skipped a conversation", "conv", conv, "err", err)
			st.Failed++
			if len(errs) < maxSweepErrs {
				errs = append(errs, err)
			}
		}
	}
	if left > 0 {
		s.log.Warn("retention: the segment store cannot be reached; conversations with sealed messages to expire are left for the next sweep",
			"conversations", left, "err", down)
		st.Failed += left
	}
	s.metrics.expired.Add(float64(st.Hot))
	return st, errors.Join(errs...)
}

// straddlerLag is how long past the cutoff the oldest message of the
// segment straddling it may stay before the segment is rewritten without
// its expired messages: a tenth of the retention (cutoff to now), at
// most a day. The cutoff moves with every sweep (each minute), and a
// rewrite is a new object uploaded and read back (with a local store,
// the whole segment in the Raft log): rewriting it whenever one more
// message had expired rewrote a segment of an old conversation hundreds
// of times (review, session 38). Now at most once per lag.
func straddlerLag(cutoff snowflake.ID, now time.Time) time.Duration {
	return min(24*time.Hour, now.Sub(cutoff.Time())/10)
}

// spareYoungStraddler lowers cutoff to the first message of conv's
// segment that straddles it while that message expired less than
// straddlerLag ago: the segment, and what is stored alongside its
// range, then waits whole for a later sweep; what lies below it
// expires now.
func (s *Service) spareYoungStraddler(conv string, cutoff snowflake.ID, now time.Time, lag time.Duration) (snowflake.ID, error) {
	if lag == 0 {
		lag = straddlerLag(cutoff, now)
	}
	if s.tier == nil || lag < 0 {
		return cutoff, nil
	}
	var ref SegmentRef
	var found bool
	if err := s.db.View(func(tx *badger.Txn) error {
		var err error
		ref, found, err = findSealed(tx, conv, cutoff)
		return err
	}); err != nil || !found || ref.FirstID >= cutoff {
		return cutoff, err
	}
	if cutoff.Time().Sub(ref.FirstID.Time()) < lag {
		return ref.FirstID, nil
	}
	return cutoff, nil
}

// sealedBefore tells whether conv has a segment holding messages below
// cutoff: expiring it reads (and may rewrite) segments.
func (s *Service) sealedBefore(conv string, cutoff snowflake.ID) (bool, error) {
	if s.tier == nil {
		return false, nil
	}
	var sealed bool
	err := s.db.View(func(tx *badger.Txn) error {
		prefix := segIndexPrefix(conv)
		it := tx.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		it.Seek(prefix)
		if !it.ValidForPrefix(prefix) {
			return nil
		}
		ref, err := segRefOf(it.Item())
		sealed = err == nil && ref.FirstID < cutoff
		return err
	})
	return sealed, err
}

// expireConversation deletes conv's messages below cutoff: what the
// oldest expiring messages refer to first; then they go (up to where that
// was done: the next sweep goes on).
func (s *Service) expireConversation(ctx context.Context, conv string, cutoff snowflake.ID, st *RetentionStats) error {
	cutoff, err := s.expireRefs(ctx, conv, cutoff, st)
	if err != nil {
		return err
	}
	for range 1000 { // bounded: each command deletes a batch
		cmd := retentionCmd{Conv: conv, Cutoff: cutoff}
		var keptWhole bool
		if err := s.rewriteStraddler(ctx, &cmd, &keptWhole); err != nil {
			return err
		}
		if keptWhole {
			st.KeptWhole++
			cutoff = cmd.Cutoff // for the following batches too
		}
		v, err := s.prop.Propose(ctx, wire.CmdRetention, cmd.encode())
		if err != nil {
			return fmt.Errorf("archive: retention of %s: %w", conv, err)
		}
		res, _ := v.(*expired)
		if res == nil {
			return fmt.Errorf("archive: retention of %s: handler returned %T", conv, v)
		}
		st.Commands++
		st.Hot += res.Hot
		st.Sync += res.Sync
		st.Segments += res.Segments
		if cmd.Replace != nil {
			st.Rewritten++
		}
		if !res.More {
			break
		}
	}
	return nil
}

// archivedConversations maps every conversation with hot or sealed
// messages to its oldest message ID (the first of its oldest segment).
func (s *Service) archivedConversations() (map[string]snowflake.ID, error) {
	hot, err := s.hotConversations()
	if err != nil {
		return nil, err
	}
	out := make(map[string]snowflake.ID, len(hot))
	for _, h := range hot {
		out[h.conv] = h.first
	}
	err = s.db.View(func(tx *badger.Txn) error {
		root := segIndexRoot()
		it := tx.NewIterator(badger.IteratorOptions{Prefix: root})
		defer it.Close()
		for it.Seek(root); it.ValidForPrefix(root); {
			ref, err := segRefOf(it.Item())
			if err != nil {
				return err
			}
			if o, ok := out[ref.Conv]; !ok || ref.FirstID < o {
				out[ref.Conv] = ref.FirstID
			}
			it.Seek(append(segIndexPrefix(ref.Conv), 0xff)) // the next conversation's
		}
		return nil
	})
	return out, err
}

// rewriteStraddler gives cmd the replacement of the conversation's
// segment that straddles the cutoff, if there is one: its messages at or
// above the cutoff in a new segment, uploaded and read back (or inline).
//
// A straddler that cannot be read lowers cmd.Cutoff to its first message
// and sets keptWhole.
func (s *Service) rewriteStraddler(ctx context.Context, cmd *retentionCmd, keptWhole *bool) error {
	if s.tier == nil {
		return nil
	}
	var ref SegmentRef
	var found bool
	if err := s.db.View(func(tx *badger.Txn) error {
		var err error
		ref, found, err = findSealed(tx, cmd.Conv, cmd.Cutoff)
		return err
	}); err != nil || !found || ref.FirstID >= cmd.Cutoff {
		return err
	}
	// A member that keeps segments elsewhere could not read the
	// replacement: the segment stays whole, as one that cannot be read.
	if err := s.checkStores(ctx, false); errors.Is(err, ErrStoreMismatch) {
		s.log.Error("retention: the segment straddling the cutoff is kept whole until every node keeps sealed segments in the same store",
			"segment", ref.Key, "err", err)
		cmd.Cutoff = ref.FirstID
		*keptWhole = true
		return nil
	} else if err != nil {
		return err
	}
	kept, more, err := s.tier.below(ctx, ref, ref.LastID+1, ref.Count, nil)
	if errors.Is(err, ErrSegmentCorrupt) || errors.Is(err, ErrSegmentMissing) {
		// Its unexpired messages cannot be carried over, and nothing can
		// be deleted from it unverified: it stays whole, and this
		// conversation expires only what is below it.
		s.log.Warn("retention: the segment straddling the cutoff cannot be read; it is kept whole",
			"segment", ref.Key, "messages", ref.Count, "err", err)
		cmd.Cutoff = ref.FirstID
		*keptWhole = true
		return nil
	}
	if err != nil {
		return err
	}
	_ = more
	var msgs []segment.Message
	for i := len(kept) - 1; i >= 0; i-- { // below gives newest first
		if kept[i].ID >= cmd.Cutoff {
			msgs = append(msgs, segment.Message{ID: uint64(kept[i].ID), Body: kept[i].Body})
		}
	}
	if len(msgs) == 0 {
		return nil // cannot happen: the last message is at or above the cutoff
	}
	data, meta, err := segment.Write(cmd.Conv, msgs, 0)
	if err != nil {
		return err
	}
	nr := SegmentRef{Conv: cmd.Conv, FirstID: snowflake.ID(meta.FirstID), LastID: snowflake.ID(meta.LastID), Count: meta.Count, Size: meta.Size, SHA256: meta.SHA256}
	if nr.Key, err = SegmentObjectKey(cmd.Conv, nr.FirstID, nr.LastID); err != nil {
		return err
	}
	repl := &sealCmd{Ref: nr, MsgHash: hashMessages(msgs)}
	if s.tier.store.Shared() {
		if err := s.upload(ctx, nr.Key, data); err != nil {
			return err
		}
		if err := s.verifyObject(ctx, nr); err != nil {
			return err
		}
	} else {
		repl.Inline = data
	}
	cmd.Replace, cmd.OldKey = repl, ref.Key
	return nil
}

// dropLateUnread takes expired messages below the readers' cursors off
// their unread counts, late[i] of them for side i (users[i]), as far as
// the counts hold such messages. A message stored late, with an ID below
// the reader's cursor (its node's clock was behind, or a link brought it
// with its origin's ID), counts as unread until the reader's next read
// (applyMessage): expired before
// that, it stayed in the count for good, an unread message nobody could
// find, in the conversation list and in the unread total. Which of the
// messages below the cursor count is not kept; what is known is the
// surplus, the count less the peer's messages above the cursor, which a
// read takes off: the expired ones are taken from it. The surplus is
// told only when the peer's messages above the cursor are all in the hot
// tier (countAbove does not read segments): with a segment reaching
// above the cursor nothing is taken off, as before.
func dropLateUnread(tx *badger.Txn, conv string, p *pair, late [2]uint64, users [2]string) error {
	for r := range 2 {
		if late[r] == 0 || p.Unread[r] == 0 || p.Unread[r] >= unreadCap {
			continue
		}
		sp := segIndexPrefix(conv)
		it := tx.NewIterator(badger.IteratorOptions{Prefix: sp})
		it.Seek(segIndexKey(conv, p.Cursor[r]+1))
		sealedAbove := it.ValidForPrefix(sp)
		it.Close()
		if sealedAbove {
			continue
		}
		total, own, err := countAbove(tx, conv, p.Cursor[r], users[r])
		if err != nil {
			return err
		}
		if above := total - own; p.Unread[r] > above {
			p.Unread[r] -= min(late[r], p.Unread[r]-above)
		}
	}
	return nil
}
