package archive

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/internal/snowflake"
)

// Page sizes.
const (
	historyDefault       = 50
	historyMax           = 200
	syncDefault          = 500
	syncMax              = 1000
	conversationsDefault = 200
	conversationsMax     = 1000
	// unreadCap bounds the unread count of one conversation ("1000" means
	// "1000 or more"), so listing conversations stays cheap for a user
	// who never reads.
	unreadCap = 1000
	// readBarrierTimeout bounds a catch-up read's wait for this node to
	// apply what the cluster committed (503 unavailable after it).
	readBarrierTimeout = 5 * time.Second
)

// loadMessage reads a message by its ID alone: one of the older layout,
// or one m/ points at. A sealed message is a *sealedError.
func loadMessage(tx *badger.Txn, id snowflake.ID) ([]byte, error) {
	v, err := getMsg(tx, id)
	if err != nil {
		return nil, err
	}
	if len(v) > 0 && v[0] == pointerTag {
		return loadIn(tx, string(v[1:]), id)
	}
	return v, nil
}

// getMsg is the m/ value of id.
func getMsg(tx *badger.Txn, id snowflake.ID) ([]byte, error) {
	it, err := tx.Get(msgKey(id))
	if err != nil {
		return nil, fmt.Errorf("archive: message %d: %w", id, err)
	}
	return it.ValueCopy(nil)
}

// loadIn reads message id of conversation conv: from its history key,
// or from m/ for a message of the older layout.
func loadIn(tx *badger.Txn, conv string, id snowflake.ID) ([]byte, error) {
	return loadAt(tx, convKey(conv, id), id)
}

// loadAt reads message id from its history key ck, or from m/ for a
// message of the older layout. A message that is not hot any more (no
// history key, and no body under m/) is a *sealedError.
func loadAt(tx *badger.Txn, ck []byte, id snowflake.ID) ([]byte, error) {
	it, err := tx.Get(ck)
	if errors.Is(err, badger.ErrKeyNotFound) {
		v, err := getMsg(tx, id)
		switch {
		case errors.Is(err, badger.ErrKeyNotFound) || err == nil && len(v) > 0 && v[0] == pointerTag:
			return nil, &sealedError{Conv: convOfKey(ck), ID: id}
		case err != nil:
			return nil, err
		}
		return v, nil // not expected: every message of the older layout has its c/ key
	}
	if err != nil {
		return nil, fmt.Errorf("archive: message %d: %w", id, err)
	}
	var body []byte
	var hasBody bool
	if err := it.Value(func(v []byte) error {
		_, body, hasBody, _ = readBody(convOfKey(ck), id, v, true)
		return nil
	}); err != nil {
		return nil, err
	}
	if !hasBody {
		return loadMessage(tx, id)
	}
	return body, nil
}

// bodyOf is the stored envelope in history item (message id of conv), or
// nil for a message of the older layout, whose body is under m/.
func bodyOf(item *badger.Item, conv string, id snowflake.ID) (body []byte, err error) {
	err = item.Value(func(v []byte) error {
		_, body, _, _ = readBody(conv, id, v, true)
		return nil
	})
	return body, err
}

// loadLocated reads the message an s/ or dedup/ value names: in conv,
// or by ID alone for a value of the older layout (conv "").
func loadLocated(tx *badger.Txn, id snowflake.ID, conv string) ([]byte, error) {
	if conv == "" {
		return loadMessage(tx, id)
	}
	return loadIn(tx, conv, id)
}

// historyPage returns up to limit messages of a conversation with IDs
// below before (all when before is nil), newest first. The bodies are
// the values of the keys walked (read from m/ for messages of the older
// layout), so a page reads consecutive keys. A page that reaches below
// the hot messages reads on in the conversation's sealed segments
// (merged by ID: sealing takes a conversation's oldest messages, but a
// message committed late may carry an older ID).
func (s *Service) historyPage(ctx context.Context, conv string, before *snowflake.ID, limit int) (msgs [][]byte, hasMore bool, err error) {
	prefix := convPrefix(conv)
	seek := append(append([]byte{}, prefix...), 0xff)
	below := ^snowflake.ID(0)
	if before != nil {
		if *before == 0 {
			return nil, false, nil
		}
		seek = withID(prefix, uint64(*before)-1)
		below = *before
	}
	var hot []idBody
	var refs []SegmentRef
	err = s.db.View(func(tx *badger.Txn) error {
		it := tx.NewIterator(badger.IteratorOptions{Prefix: prefix, Reverse: true})
		defer it.Close()
		var old []int // indexes into hot of messages of the older layout
		for it.Seek(seek); it.ValidForPrefix(prefix); it.Next() {
			if len(hot) == limit {
				hasMore = true
				break
			}
			item := it.Item()
			id := snowflake.ID(tail8(item.Key()))
			m, err := bodyOf(item, conv, id)
			if err != nil {
				return err
			}
			if m == nil {
				old = append(old, len(hot))
			}
			hot = append(hot, idBody{ID: id, Body: m})
		}
		for _, at := range old {
			m, err := loadMessage(tx, hot[at].ID)
			if err != nil {
				return err
			}
			hot[at].Body = m
		}
		var err error
		refs, err = sealedBelow(tx, conv, below, limit+1)
		return err
	})
	if err != nil {
		return nil, false, err
	}
	// The sealed messages matter only if one of them would be on the page.
	if len(refs) > 0 && (len(hot) < limit || refs[0].LastID > hot[len(hot)-1].ID) {
		sealed, sealedMore, err := s.sealedPage(ctx, refs, below, limit)
		if err != nil {
			return nil, false, err
		}
		var merged bool
		hot, merged = mergeDesc(hot, sealed, limit)
		hasMore = hasMore || sealedMore || merged
	} else if len(refs) > 0 && len(hot) == limit && !hasMore {
		// The hot messages ran out exactly at the page's end: the sealed
		// ones below are the next page. (The oldest segment listed has
		// the lowest first ID.)
		hasMore = refs[len(refs)-1].FirstID < hot[len(hot)-1].ID
	}
	msgs = make([][]byte, len(hot))
	for i, m := range hot {
		msgs[i] = m.Body
	}
	return msgs, hasMore, nil
}

// sealedPage reads up to n messages below before from refs (segments,
// newest first), newest first; more tells whether there are others.
func (s *Service) sealedPage(ctx context.Context, refs []SegmentRef, before snowflake.ID, n int) (out []idBody, more bool, err error) {
	if s.tier == nil {
		return nil, false, fmt.Errorf("archive: %s has sealed messages: %w", refs[0].Conv, ErrNoSegments)
	}
	for i, ref := range refs {
		start := len(out)
		if out, more, err = s.tier.below(ctx, ref, before, n, out); err != nil {
			return nil, false, err
		}
		for k := start; k < len(out); k++ {
			if out[k].Body, err = expandSealed(ref.Conv, out[k].ID, out[k].Body); err != nil {
				return nil, false, err
			}
		}
		if len(out) == n {
			return out, more || i < len(refs)-1, nil
		}
	}
	return out, false, nil
}

// mergeDesc merges two lists of messages in descending ID order into at
// most n; more tells whether some were left out.
func mergeDesc(a, b []idBody, n int) (_ []idBody, more bool) {
	out := make([]idBody, 0, min(n, len(a)+len(b)))
	i, j := 0, 0
	for len(out) < n && (i < len(a) || j < len(b)) {
		switch {
		case j == len(b) || i < len(a) && a[i].ID > b[j].ID:
			out = append(out, a[i])
			i++
		case i < len(a) && a[i].ID == b[j].ID: // not expected: a message is hot or sealed
			out = append(out, a[i])
			i, j = i+1, j+1
		default:
			out = append(out, b[j])
			j++
		}
	}
	return out, i < len(a) || j < len(b)
}

// syncPage returns up to limit messages for uid committed after the
// position since, in commit order, and the position of the last one
// (since itself when there is none). It merges uid's own index (direct
// messages) with the index of every group uid is a member of now: a
// group's messages are synced while you are a member at query time.
// Every command has its own position, so the merged stream has no ties
// and one position is a complete cursor.
func (s *Service) syncPage(ctx context.Context, uid string, since uint64, limit int) (msgs [][]byte, next uint64, hasMore bool, err error) {
	next = since
	if since == ^uint64(0) {
		return nil, next, false, nil
	}
	var sealed []sealedAt // messages of the page read from segments after the transaction
	err = s.db.View(func(tx *badger.Txn) error {
		// uid's groups are read once the transaction has its snapshot, so
		// that they hold every join the snapshot does: read before it, a
		// join committed in between, with a message of the group and a
		// later direct message, would give the page the direct message
		// (the cursor moving past the group's) without the group's.
		gids, err := s.groupsOf(uid)
		if err != nil {
			return err
		}
		prefixes := [][]byte{syncPrefix(uid)}
		convs := []string{""} // per prefix: the conversation of a group's index
		for _, gid := range gids {
			// One Get skips a group with nothing new, instead of an iterator.
			sum, found, err := getSummary(tx, groupSummaryKey(gid))
			if err != nil {
				return err
			}
			if found && sum.LastSeq > since {
				prefixes = append(prefixes, groupSyncPrefix(gid))
				convs = append(convs, groupConv(gid))
			}
		}
		m := newMerge(tx, prefixes, since+1)
		defer m.close()
		for item := m.next(); item != nil; item = m.next() {
			if len(msgs) == limit {
				hasMore = true
				return nil
			}
			var id snowflake.ID
			var ck []byte
			if err := item.Value(func(v []byte) error {
				if len(v) < 8 {
					return fmt.Errorf("%w: sync entry of %d bytes", ErrBadCommand, len(v))
				}
				id, ck = snowflake.ID(tail8(v[:8])), locatedKey(uid, v)
				return nil
			}); err != nil {
				return err
			}
			if m.last > 0 {
				ck = convKey(convs[m.last], id) // a group's index holds 8-byte IDs
			}
			var msg []byte
			var err error
			if ck == nil {
				msg, err = loadMessage(tx, id)
			} else {
				msg, err = loadAt(tx, ck, id)
			}
			var se *sealedError
			if errors.As(err, &se) {
				sealed = append(sealed, sealedAt{at: len(msgs), conv: se.Conv, id: se.ID})
			} else if err != nil {
				return err
			}
			msgs = append(msgs, msg)
			next = tail8(item.Key())
		}
		return nil
	})
	if err != nil {
		return nil, since, false, err
	}
	expired := false
	for _, m := range sealed {
		msgs[m.at], err = s.sealedMessage(ctx, m.conv, m.id)
		if errors.Is(err, badger.ErrKeyNotFound) {
			expired = true // deleted by retention after its sync entry was kept
			continue
		}
		if err != nil {
			return nil, since, false, err
		}
	}
	if expired {
		msgs = slices.DeleteFunc(msgs, func(m []byte) bool { return m == nil })
	}
	return msgs, next, hasMore, nil
}

// sealedAt is a message of a page to be read from its segment.
type sealedAt struct {
	at   int
	conv string
	id   snowflake.ID
}

// merge walks several sync indexes (keys ending in an 8-byte position)
// together in position order: a k-way merge over a min-heap of
// iterators.
type merge struct {
	its  []*badger.Iterator
	pfx  [][]byte
	heap []int // indexes into its, ordered by their current position
	last int   // the iterator whose item next returned (advanced on the next call), or -1
}

func newMerge(tx *badger.Txn, prefixes [][]byte, from uint64) *merge {
	m := &merge{pfx: prefixes, last: -1}
	for i, p := range prefixes {
		it := tx.NewIterator(badger.IteratorOptions{Prefix: p})
		it.Seek(withID(p, from))
		m.its = append(m.its, it)
		if it.ValidForPrefix(p) {
			m.push(i)
		}
	}
	return m
}

func (m *merge) pos(i int) uint64 { return tail8(m.its[m.heap[i]].Item().Key()) }

func (m *merge) push(it int) {
	m.heap = append(m.heap, it)
	for i := len(m.heap) - 1; i > 0; {
		p := (i - 1) / 2
		if m.pos(p) <= m.pos(i) {
			break
		}
		m.heap[p], m.heap[i] = m.heap[i], m.heap[p]
		i = p
	}
}

func (m *merge) pop() int {
	top := m.heap[0]
	n := len(m.heap) - 1
	m.heap[0] = m.heap[n]
	m.heap = m.heap[:n]
	for i := 0; ; {
		l, small := 2*i+1, i
		if l < n && m.pos(l) < m.pos(small) {
			small = l
		}
		if r := l + 1; r < n && m.pos(r) < m.pos(small) {
			small = r
		}
		if small == i {
			break
		}
		m.heap[i], m.heap[small] = m.heap[small], m.heap[i]
		i = small
	}
	return top
}

// next returns the item with the lowest position not returned yet, or
// nil at the end. The item is valid until the following call.
func (m *merge) next() *badger.Item {
	if m.last >= 0 {
		it := m.its[m.last]
		it.Next()
		if it.ValidForPrefix(m.pfx[m.last]) {
			m.push(m.last)
		}
		m.last = -1
	}
	if len(m.heap) == 0 {
		return nil
	}
	m.last = m.pop()
	return m.its[m.last].Item()
}

func (m *merge) close() {
	for _, it := range m.its {
		it.Close()
	}
}

// conversation is one entry of the conversation list: a direct
// conversation (Peer) or a group (Group).
type conversation struct {
	Peer   string
	Group  string
	Last   []byte // the envelope JSON of the conversation's newest message
	Unread int
	// PeerRead is how far the peer of a direct conversation has read
	// (its read cursor; 0: nothing, or not told: see conversations).
	PeerRead snowflake.ID
	lastSeq  uint64
}

// convCursor is where a page of the conversation list ended: its last
// conversation's place in the list's order (latest activity first, then
// peer, then group). The next page starts after it.
type convCursor struct {
	lastSeq uint64
	peer    string
	group   string
}

// String is the cursor as GET /chat/conversations answers it:
// {lastSeq}.d{peer} or {lastSeq}.g{group}.
func (c convCursor) String() string {
	if c.group != "" {
		return strconv.FormatUint(c.lastSeq, 10) + ".g" + c.group
	}
	return strconv.FormatUint(c.lastSeq, 10) + ".d" + c.peer
}

// parseConvCursor reads a cursor String wrote.
func parseConvCursor(v string) (convCursor, error) {
	seq, rest, ok := strings.Cut(v, ".")
	n, err := strconv.ParseUint(seq, 10, 64)
	if !ok || err != nil || len(rest) < 2 || (rest[0] != 'd' && rest[0] != 'g') {
		return convCursor{}, badParam("malformed cursor")
	}
	if rest[0] == 'g' {
		return convCursor{lastSeq: n, group: rest[1:]}, nil
	}
	return convCursor{lastSeq: n, peer: rest[1:]}, nil
}

// compareConv orders the conversation list: latest activity first, then
// by peer, then by group.
func compareConv(aSeq uint64, aPeer, aGroup string, bSeq uint64, bPeer, bGroup string) int {
	return cmp.Or(cmp.Compare(bSeq, aSeq), cmp.Compare(aPeer, bPeer), cmp.Compare(aGroup, bGroup))
}

// conversations lists uid's conversations, latest activity first: direct
// conversations and the groups uid is a member of that have messages.
func (s *Service) conversations(ctx context.Context, uid string, limit int) (out []conversation, hasMore bool, err error) {
	out, _, hasMore, err = s.conversationsAfter(ctx, uid, limit, nil)
	return out, hasMore, err
}

// conversationsAfter is conversations from after the cursor after (nil:
// from the start); next is where the page ended (set with hasMore).
func (s *Service) conversationsAfter(ctx context.Context, uid string, limit int, after *convCursor) (out []conversation, next convCursor, hasMore bool, err error) {
	var sealed []sealedAt
	err = s.db.View(func(tx *badger.Txn) error {
		// The groups once the snapshot is taken (as syncPage): read
		// before it, a removal and the group's next message committed in
		// between would show that message to the member just removed.
		gids, err := s.groupsOf(uid)
		if err != nil {
			return err
		}
		peers, sums, err := directSummaries(tx, uid)
		if err != nil {
			return err
		}
		all := make([]conversation, len(peers), len(peers)+len(gids))
		for i, p := range peers {
			all[i] = conversation{Peer: p, lastSeq: sums[i].LastSeq}
		}
		for _, gid := range gids {
			sum, found, err := getSummary(tx, groupSummaryKey(gid))
			if err != nil {
				return err
			}
			if found {
				all = append(all, conversation{Group: gid, lastSeq: sum.LastSeq})
				sums = append(sums, sum)
			}
		}
		order := make([]int, len(all))
		for i := range order {
			order[i] = i
		}
		slices.SortFunc(order, func(a, b int) int {
			return compareConv(all[a].lastSeq, all[a].Peer, all[a].Group, all[b].lastSeq, all[b].Peer, all[b].Group)
		})
		out = make([]conversation, 0, min(len(order), limit))
		for _, i := range order {
			c := all[i]
			if after != nil && compareConv(c.lastSeq, c.Peer, c.Group, after.lastSeq, after.peer, after.group) <= 0 {
				continue // on an earlier page
			}
			var err error
			conv := groupConv(c.Group)
			if c.Group == "" {
				conv = directConv(uid, c.Peer)
			}
			var se *sealedError
			if c.Last, err = loadIn(tx, conv, sums[i].LastID); errors.As(err, &se) {
				// A conversation's newest message is never sealed, but it
				// may have expired (retention): then no segment holds it
				// either, and the conversation takes no place on the page.
				if _, held, err := findSealed(tx, se.Conv, se.ID); err != nil {
					return err
				} else if !held {
					continue
				}
				if len(out) < limit {
					// Read after the transaction.
					sealed = append(sealed, sealedAt{at: len(out), conv: se.Conv, id: se.ID})
				}
			} else if err != nil {
				return err
			}
			if len(out) == limit {
				hasMore = true // another conversation to list
				break
			}
			if c.Group != "" {
				c.Unread, err = groupUnread(tx, uid, c.Group, sums[i])
			} else {
				c.Unread, err = unread(tx, uid, c.Peer, sums[i])
				c.PeerRead = s.peerRead(uid, c.Peer, sums[i])
			}
			if err != nil {
				return err
			}
			out = append(out, c)
			next = convCursor{lastSeq: c.lastSeq, peer: c.Peer, group: c.Group}
		}
		return nil
	})
	if err != nil {
		return nil, next, false, err
	}
	expired := false
	for _, m := range sealed {
		out[m.at].Last, err = s.sealedMessage(ctx, m.conv, m.id)
		if errors.Is(err, badger.ErrKeyNotFound) {
			expired = true // every message of the conversation expired (retention)
			continue
		}
		if err != nil {
			return nil, next, false, err
		}
	}
	if expired {
		out = slices.DeleteFunc(out, func(c conversation) bool { return c.Last == nil })
	}
	return out, next, hasMore, nil
}

// peerRead is how far peer has read uid's conversation with them, as
// the read receipts uid was told live say: not for a conversation with
// oneself, nor when uid has blocked peer (their receipts reach uid no
// more).
func (s *Service) peerRead(uid, peer string, sum summary) snowflake.ID {
	if uid == peer || sum.PeerCursor == ^snowflake.ID(0) || (s.blocks != nil && s.blocks.IsBlocked(uid, peer)) {
		return 0
	}
	return sum.PeerCursor
}

// directSummaries lists uid's direct conversations (the peers, in order)
// and their summaries: the v/ index is iterated (its keys are written
// once, so the iterator has no versions to step over) and each kept
// summary is read with a Get (directSide); a 16-byte v/ value without a
// kept one is a summary written before counts were kept.
func directSummaries(tx *badger.Txn, uid string) (peers []string, sums []summary, err error) {
	prefix := summaryPrefix(uid)
	var legacy []summary
	it := tx.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: true, PrefetchSize: 100})
	for it.Seek(prefix); it.ValidForPrefix(prefix); it.Next() {
		item := it.Item()
		var sum summary
		if err := item.Value(func(v []byte) error { sum, _ = decodeSummary(v); return nil }); err != nil {
			it.Close()
			return nil, nil, err
		}
		peers = append(peers, string(item.Key()[len(prefix):]))
		legacy = append(legacy, sum)
	}
	it.Close()
	sums = legacy[:0]
	out := peers[:0]
	for i, p := range peers {
		sum, found, err := directSide(tx, uid, p)
		if err != nil {
			return nil, nil, err
		}
		if !found {
			if sum = legacy[i]; sum.LastID == 0 {
				continue // neither form is readable: skipped, as before
			}
		}
		out = append(out, p)
		sums = append(sums, sum)
	}
	return out, sums, nil
}

// directSide reads uid's side of the kept summary of its conversation
// with peer: from x/, else from w/ (written before x/); found is false
// when neither holds one.
func directSide(tx *badger.Txn, uid, peer string) (summary, bool, error) {
	p, found, err := getPair(tx, directConv(uid, peer))
	if err != nil || found {
		return p.side(sideOf(uid, peer)), found, err
	}
	return getSummary(tx, stateKey(uid, peer))
}

// unread is uid's unread count in the direct conversation with peer,
// whose summary is sum: kept in the summary, or counted for a summary
// written before counts were kept.
func unread(tx *badger.Txn, uid, peer string, sum summary) (int, error) {
	if sum.Kept {
		return int(min(sum.Unread, unreadCap)), nil
	}
	if uid == peer {
		return 0, nil // nothing was ever indexed as received from oneself
	}
	cur, _, err := getCursor(tx, cursorKey(uid, directConv(uid, peer)))
	if err != nil {
		return 0, err
	}
	return legacyUnread(tx, uid, peer, cur)
}

// legacyUnread counts what uid received from peer with IDs above cur, up
// to unreadCap, on the i/ index that was written until counts were kept:
// for the conversations whose summaries are still in the 16-byte form,
// every message has its i/ key.
func legacyUnread(tx *badger.Txn, uid, peer string, cur snowflake.ID) (int, error) {
	if cur == ^snowflake.ID(0) {
		return 0, nil
	}
	prefix := inboxPrefix(uid, peer)
	it := tx.NewIterator(badger.IteratorOptions{Prefix: prefix})
	defer it.Close()
	n := 0
	for it.Seek(withID(prefix, uint64(cur)+1)); it.ValidForPrefix(prefix) && n < unreadCap; it.Next() {
		n++
	}
	return n, nil
}

// groupUnread is uid's unread count in group gid, whose summary is sum:
// derived from the kept counts (see memberCursor), or else the messages
// of the group from others with IDs above uid's read cursor, counted up
// to unreadCap on the group's history (the sender is the value).
func groupUnread(tx *badger.Txn, uid, gid string, sum summary) (int, error) {
	conv := groupConv(gid)
	rec, found, err := getMemberCursor(tx, cursorKey(uid, conv))
	if err != nil {
		return 0, err
	}
	if n, ok := rec.unread(sum, found); ok {
		return n, nil
	}
	if rec.UpTo == ^snowflake.ID(0) {
		return 0, nil
	}
	total, own, err := countAbove(tx, conv, rec.UpTo, uid)
	return int(total - own), err
}

// Message returns the stored envelope JSON of message id; ok is false
// when there is none. Only the messages that have an m/ key are found by
// ID alone: those the push outbox staged (the push sender's lookup), and
// every message stored before bodies moved into the history (keys.go);
// MessageIn finds any message of a known conversation.
func (s *Service) Message(id snowflake.ID) (payload []byte, ok bool, err error) {
	err = s.db.View(func(tx *badger.Txn) error {
		payload, err = loadMessage(tx, id)
		return err
	})
	payload, err = s.resolve(context.Background(), payload, err)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, false, nil
	}
	return payload, err == nil, err
}

// ReadUpTo is uid's read cursor in a conversation: with peer for a
// direct conversation, or of group gid when gid is set. 0 when nothing
// was read.
func (s *Service) ReadUpTo(uid, peer, gid string) (snowflake.ID, error) {
	conv := groupConv(gid)
	if gid == "" {
		conv = directConv(uid, peer)
	}
	var cur snowflake.ID
	err := s.db.View(func(tx *badger.Txn) error {
		var err error
		cur, _, err = getCursor(tx, cursorKey(uid, conv))
		return err
	})
	return cur, err
}

// LateUnread reports whether a message below uid's read cursor in a
// conversation (with peer, or of group gid when gid is set) still counts
// as unread: one stored after the cursor last moved with an ID below it
// (the node that took it had a clock behind, or it came from another
// region late). The kept count then exceeds what lies above the cursor.
// The push bridge asks it for a message at or below the cursor, which it
// would otherwise take as read. A conversation whose count is not kept,
// or at the unread cap, answers false.
func (s *Service) LateUnread(uid, peer, gid string) (bool, error) {
	var late bool
	err := s.db.View(func(tx *badger.Txn) error {
		var (
			conv    string
			upTo    snowflake.ID
			counted uint64
		)
		if gid != "" {
			conv = groupConv(gid)
			rec, found, err := getMemberCursor(tx, cursorKey(uid, conv))
			if err != nil {
				return err
			}
			sum, sfound, err := getSummary(tx, groupSummaryKey(gid))
			if err != nil || !sfound {
				return err
			}
			n, ok := rec.unread(sum, found)
			if !ok {
				return nil
			}
			upTo, counted = rec.UpTo, uint64(n)
		} else {
			conv = directConv(uid, peer)
			p, found, err := getPair(tx, conv)
			if err != nil || !found {
				return err
			}
			cur, _, err := getCursor(tx, cursorKey(uid, conv))
			if err != nil {
				return err
			}
			upTo, counted = cur, p.Unread[sideOf(uid, peer)]
		}
		if counted == 0 || counted >= unreadCap {
			return nil
		}
		total, own, err := countAbove(tx, conv, upTo, uid)
		late = err == nil && counted > total-own
		return err
	})
	return late, err
}

// UnreadTotal is uid's unread count over every conversation (each
// counted up to the cap of the conversation list): the badge of a push
// notification. It reads what the conversation list reads, without
// loading the last messages.
func (s *Service) UnreadTotal(uid string) (int, error) {
	gids, err := s.groupsOf(uid)
	if err != nil {
		return 0, err
	}
	total := 0
	err = s.db.View(func(tx *badger.Txn) error {
		peers, sums, err := directSummaries(tx, uid)
		if err != nil {
			return err
		}
		for i, peer := range peers {
			n, err := unread(tx, uid, peer, sums[i])
			if err != nil {
				return err
			}
			total += n
		}
		for _, gid := range gids {
			sum, found, err := getSummary(tx, groupSummaryKey(gid))
			if err != nil {
				return err
			}
			if !found {
				continue // no message in the group
			}
			n, err := groupUnread(tx, uid, gid, sum)
			if err != nil {
				return err
			}
			total += n
		}
		return nil
	})
	return total, err
}

// MessageIn returns the stored envelope JSON of message id in the direct
// conversation between a and b, or in group gid when gid is set; ok is
// false when that conversation holds no such message.
func (s *Service) MessageIn(id snowflake.ID, a, b, gid string) (payload []byte, ok bool, err error) {
	conv := groupConv(gid)
	if gid == "" {
		conv = directConv(a, b)
	}
	err = s.db.View(func(tx *badger.Txn) error {
		if _, err := tx.Get(convKey(conv, id)); errors.Is(err, badger.ErrKeyNotFound) {
			// Not hot in this conversation (m/ is not asked): sealed, or not there.
			return &sealedError{Conv: conv, ID: id}
		} else if err != nil {
			return err
		}
		payload, err = loadIn(tx, conv, id)
		return err
	})
	payload, err = s.resolve(context.Background(), payload, err)
	if errors.Is(err, badger.ErrKeyNotFound) || errors.Is(err, ErrNoSegments) {
		return nil, false, nil
	}
	return payload, err == nil, err
}
