package archive

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/internal/snowflake"
	"github.com/edgechat/edgechat/internal/wire"
)

// Command payloads are binary so that applying a message never parses
// JSON: a version byte, then the fields, then (for a message) the stored
// envelope JSON as the rest of the payload.
//
// Version 1 is a direct message or a direct read cursor, exactly as
// written before groups existed, so old log entries apply unchanged (a
// version 1 message naming a group is still refused, as it always was,
// so replaying an old log gives the same state). Version 2 is the same
// layout for a group: a message with Group set and To empty, or a read
// cursor whose second string is the group ID. A node that predates
// groups refuses version 2, so every node must run this version before
// anyone sends to a group (a rolling upgrade finishes first).
const (
	cmdVersion      = 1
	cmdVersionGroup = 2
)

// ErrBadCommand marks a replicated command this version cannot read.
var ErrBadCommand = errors.New("archive: malformed command")

// ErrIDTaken means a message ID is already stored for another message;
// the generator must never hand out an ID twice, so this is a bug or a
// machine-number clash, and the message is refused rather than
// overwriting history.
var ErrIDTaken = errors.New("archive: message id already used")

// msgCmd is the payload of wire.CmdMessage.
type msgCmd struct {
	ID      snowflake.ID
	From    string
	To      string
	Group   string // set for a group message (then To is empty)
	CID     string
	Payload []byte // the stored envelope JSON
}

func appendStr(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func (c *msgCmd) encode() []byte {
	b := make([]byte, 0, 1+8+4*binary.MaxVarintLen16+len(c.From)+len(c.To)+len(c.Group)+len(c.CID)+len(c.Payload))
	b = append(b, versionFor(c.Group))
	b = binary.BigEndian.AppendUint64(b, uint64(c.ID))
	b = appendStr(b, c.From)
	b = appendStr(b, c.To)
	b = appendStr(b, c.Group)
	b = appendStr(b, c.CID)
	return append(b, c.Payload...)
}

type reader struct {
	b   []byte
	err bool
}

func (r *reader) u64() uint64 {
	if len(r.b) < 8 {
		r.err = true
		return 0
	}
	v := binary.BigEndian.Uint64(r.b)
	r.b = r.b[8:]
	return v
}

func (r *reader) str() string {
	n, k := binary.Uvarint(r.b)
	if k <= 0 || n > uint64(len(r.b)-k) || n > 1<<10 {
		r.err = true
		return ""
	}
	s := string(r.b[k : k+int(n)])
	r.b = r.b[k+int(n):]
	return s
}

// strs reads len(out) strings as str does, with one allocation: they
// are substrings of one string (a message's names are read on every
// apply).
func (r *reader) strs(out ...*string) {
	end := 0
	for range out {
		n, k := binary.Uvarint(r.b[end:])
		if k <= 0 || n > uint64(len(r.b)-end-k) || n > 1<<10 {
			r.err = true
			return
		}
		end += k + int(n)
	}
	all := string(r.b[:end])
	off := 0
	for _, o := range out {
		n, k := binary.Uvarint(r.b[off:])
		*o = all[off+k : off+k+int(n)]
		off += k + int(n)
	}
	r.b = r.b[end:]
}

// versionFor is the command version of a direct (no group) or group command.
func versionFor(group string) byte {
	if group == "" {
		return cmdVersion
	}
	return cmdVersionGroup
}

func decodeMsgCmd(b []byte) (msgCmd, error) {
	if len(b) < 1 || (b[0] != cmdVersion && b[0] != cmdVersionGroup) {
		return msgCmd{}, fmt.Errorf("%w: unknown message command version", ErrBadCommand)
	}
	r := reader{b: b[1:]}
	c := msgCmd{ID: snowflake.ID(r.u64())}
	r.strs(&c.From, &c.To, &c.Group, &c.CID)
	c.Payload = r.b
	if r.err || c.ID == 0 || c.From == "" || c.CID == "" || len(c.Payload) == 0 {
		return msgCmd{}, fmt.Errorf("%w: message", ErrBadCommand)
	}
	switch {
	case b[0] == cmdVersion && c.Group != "":
		// What the handler has always answered to a version 1 group message.
		return msgCmd{}, fmt.Errorf("archive: group messages are not supported in command version 1: %w", wire.ErrNotFound)
	case b[0] == cmdVersion && c.To == "":
		return msgCmd{}, fmt.Errorf("%w: message without recipient", ErrBadCommand)
	case b[0] == cmdVersionGroup && (c.To != "" || wire.ValidGroupID(c.Group) != nil):
		// The group ID becomes part of keys, so its syntax is checked here too.
		return msgCmd{}, fmt.Errorf("%w: group message needs a valid group and no recipient", ErrBadCommand)
	}
	return c, nil
}

// cursorCmd is the payload of wire.CmdReadCursor: Peer for a direct
// conversation (version 1) or Group for a group (version 2).
type cursorCmd struct {
	Reader, Peer, Group string
	UpTo                snowflake.ID
}

func (c *cursorCmd) encode() []byte {
	other := c.Peer
	if c.Group != "" {
		other = c.Group
	}
	b := make([]byte, 0, 1+8+2*binary.MaxVarintLen16+len(c.Reader)+len(other))
	b = append(b, versionFor(c.Group))
	b = binary.BigEndian.AppendUint64(b, uint64(c.UpTo))
	b = appendStr(b, c.Reader)
	return appendStr(b, other)
}

func decodeCursorCmd(b []byte) (cursorCmd, error) {
	if len(b) < 1 || (b[0] != cmdVersion && b[0] != cmdVersionGroup) {
		return cursorCmd{}, fmt.Errorf("%w: unknown read cursor command version", ErrBadCommand)
	}
	r := reader{b: b[1:]}
	c := cursorCmd{UpTo: snowflake.ID(r.u64())}
	reader, other := r.str(), r.str()
	if r.err || len(r.b) != 0 || reader == "" || other == "" {
		return cursorCmd{}, fmt.Errorf("%w: read cursor", ErrBadCommand)
	}
	c.Reader = reader
	if b[0] == cmdVersion {
		c.Peer = other
		return c, nil
	}
	if wire.ValidGroupID(other) != nil {
		return cursorCmd{}, fmt.Errorf("%w: read cursor of an invalid group", ErrBadCommand)
	}
	c.Group = other
	return c, nil
}

// conv is the conversation key the cursor belongs to.
func (c *cursorCmd) conv() string {
	if c.Group != "" {
		return groupConv(c.Group)
	}
	return directConv(c.Reader, c.Peer)
}

// applied is what the message handler returns through the Proposer.
type applied struct {
	ID      snowflake.ID
	Payload []byte // the stored envelope JSON (the original one when Dup)
	Dup     bool
	sealed  *sealedError // Dup of a sealed original: Payload is to be read from its segment
	expired bool         // Dup of an original that expired (retention): no Payload
	after   func()       // the outbox's, once committed

	cache *summaryCache
	pair  pairWrite // the direct summary written, for the cache (conv "" for none)
	cids  *cidFilter

	live *live       // nil: no live delivery (live.go)
	lm   liveMessage // what live delivers

	// started are the sides of a direct conversation its message listed
	// (v/) for the first time: {uid, peer}, uid may see peer's presence
	// from now on (conversation.go).
	started     [2][2]string
	nStarted    int
	startedTold *conversationHooks
}

// AfterCommit tells the outbox that its staged message is committed,
// gives the summaries written to the cache and moves the dedupe filter's
// build on.
func (a *applied) AfterCommit() {
	if a.pair.conv != "" {
		// One summary per message: kept in the result itself, not in a
		// slice of its own (one allocation less per message).
		a.cache.committed(a.pair)
	}
	a.cids.afterCommit()
	if a.after != nil {
		a.after()
	}
	if a.live != nil {
		a.live.deliver(&a.lm)
	}
	a.startedTold.tell(a.started[:a.nStarted])
}

// getLocator reads a locator value (see decodeLocator) of owner's key;
// ok is false when the key is absent. A direct message's dedupe value
// is a reference to its sender's sync entry (see syncRef), read through.
func getLocator(tx *badger.Txn, owner string, key []byte) (id snowflake.ID, conv string, ok bool, err error) {
	it, err := tx.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return 0, "", false, nil
	}
	if err != nil {
		return 0, "", false, err
	}
	var ref []byte
	err = it.Value(func(v []byte) error {
		if len(v) == syncRefLen && v[0] == syncRefTag {
			ref = withID(syncPrefix(owner), binary.BigEndian.Uint64(v[1:]))
			return nil
		}
		if id, conv, ok = decodeLocator(owner, v); !ok {
			return fmt.Errorf("%w: stored id of %d bytes", ErrBadCommand, len(v))
		}
		return nil
	})
	if err != nil || ref == nil {
		return id, conv, err == nil, err
	}
	id, conv, ok, err = getLocator(tx, owner, ref)
	if err == nil && !ok {
		// The sync entry expired (retention) with its message: still a
		// duplicate, of a message that is gone (ID 0).
		return 0, "", true, nil
	}
	return id, conv, ok, err
}

// duplicateOf is the answer to a retry whose original is message id of
// conv, as its dedupe entry names it (getLocator; id 0: the original
// expired).
func duplicateOf(tx *badger.Txn, id snowflake.ID, conv string) (*applied, error) {
	if id == 0 {
		return &applied{Dup: true, expired: true}, nil
	}
	p, err := loadLocated(tx, id, conv)
	var se *sealedError
	if errors.As(err, &se) {
		// The original is sealed: the proposing node reads it from its
		// segment (the FSM does no object-store I/O).
		return &applied{ID: id, Dup: true, sealed: se}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("archive: dedupe entry %d without message: %w", id, err)
	}
	return &applied{ID: id, Payload: p, Dup: true}, nil
}

// checkIDFree refuses a message whose ID already holds another message:
// under its history key (ck, in the layout that keeps the body there) or
// under m/{id} (a body of the older layout, or a pointer written for the
// push outbox). The same value under ck is this very message,
// half-written before an ErrTxnTooBig retry, and is accepted, as is a
// pointer to the same conversation.
//
// A message of the current layout in another conversation under the
// same ID is not seen (that would need a key per ID): it overwrites
// nothing (its keys are its conversation's), and the generator never
// hands out an ID twice on a healthy cluster; see idTops.
func checkIDFree(tx *badger.Txn, ck, mk, value []byte, conv string) error {
	taken := func(v []byte) error { return fmt.Errorf("%w: %d", ErrIDTaken, tail8(mk)) }
	it, err := tx.Get(ck)
	switch {
	case err == nil:
		if err := it.Value(func(v []byte) error {
			if !bytes.Equal(v, value) {
				return taken(v)
			}
			return nil
		}); err != nil {
			return err
		}
	case !errors.Is(err, badger.ErrKeyNotFound):
		return err
	}
	it, err = tx.Get(mk)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	return it.Value(func(v []byte) error {
		if len(v) == 0 || v[0] != pointerTag || string(v[1:]) != conv {
			return taken(v)
		}
		return nil
	})
}

// applyMessage stores a message and its indexes. It is deterministic:
// everything comes from the payload and the log position, so every node
// writes the same keys. All reads happen before the first write, so a
// refusal writes nothing.
func applyMessage(tx *badger.Txn, at fsm.Position, payload []byte, st *fsmState) (any, error) {
	outbox, sc := st.outbox, st.sums
	c, err := decodeMsgCmd(payload)
	if err != nil {
		return nil, err
	}
	// Room for the keys and small values of a direct message (see below).
	kb := newKeyBuf(8*len(keyRoot) + 4*len(c.From) + 5*len(c.To) + 3*len(c.Group) + len(c.CID) + len(c.Payload) + 180)
	dk := kb.key("dedup/", c.From, "/", c.CID)
	var orig snowflake.ID
	var origConv string
	dup := false
	if st.cids.mayContain(dk) {
		if orig, origConv, dup, err = getLocator(tx, c.From, dk); err != nil {
			return nil, err
		}
	}
	if dup {
		// A retry (possibly in the same batch: the txn sees its own
		// earlier writes). Hand back the original, write nothing.
		return duplicateOf(tx, orig, origConv)
	}
	if c.Group == "" {
		if err := refuseErasedPeer(tx, st, c.From, c.To); err != nil {
			return nil, err
		}
	}
	conv := groupConv(c.Group)
	if c.Group == "" {
		conv = directConv(c.From, c.To)
	}
	// The message itself, under its history key (see keys.go).
	ck := kb.keyN(uint64(c.ID), "c/", conv, "/")
	cv := compactBody(&kb, c.Payload, c.ID, c.From, c.To, c.Group)
	if taken, err := st.ids.mayBeTaken(tx, c.ID); err != nil {
		return nil, err
	} else if taken {
		if err := checkIDFree(tx, ck, msgKey(c.ID), cv, conv); err != nil {
			return nil, err
		}
	}
	seq := at.Seq()
	idb := kb.u64(uint64(c.ID))
	// Before any write: a bound too high or a key in the filter that is
	// not stored (the write thrown away) only costs a lookup.
	st.ids.wrote(c.ID)
	st.cids.add(dk)
	// The outbox writes first: its writes are idempotent, and the dedupe
	// key must stay the last write (see below).
	var after func()
	if outbox != nil {
		if after, err = outbox.Stage(tx, Stored{ID: c.ID, From: c.From, To: c.To, Group: c.Group, Payload: c.Payload}); err != nil {
			return nil, err
		}
	}
	byID := byIDWrites{st: st, staged: after != nil, id: c.ID, conv: conv}
	if c.Group != "" {
		res, err := applyGroupMessage(tx, seq, c, &kb, ck, cv, dk, idb, byID)
		if err == nil {
			res.after, res.cids = after, st.cids
			res.setLive(st.live, c, at)
		}
		return res, err
	}

	// The conversation's summary (both sides, one key), with the
	// recipient's unread count kept: +1 for every message from the peer,
	// above the recipient's cursor or below it. One below it is late: it
	// was not there when the reader last read (the cursor stops at the
	// conversation's newest message), so it was not read. Its ID is
	// older than the reader's newest message because the node that took
	// it has a clock behind (or it waited in a link's outbox, maybe
	// through an outage, and carries its region's older ID), below a
	// cursor the reader moved to his own later message meanwhile; it
	// counted as read, never seen. A read at the cursor again clears it
	// (applyReadCursor), as a late group message.
	p, _, listed, err := sc.keptPair(tx, c.From, c.To, conv)
	if err != nil {
		return nil, err
	}
	if c.ID > p.LastID {
		p.LastID = c.ID // IDs may arrive out of order; keep the top of history
	}
	p.LastSeq = seq
	if c.To != c.From {
		r := sideOf(c.To, c.From)
		p.Unread[r] = min(p.Unread[r]+1, unreadCap)
	}

	// The dedupe key goes last. The kept counts are read-modify-write:
	// this relies on the FSM throwing away every write of a command whose
	// transaction grew too big (ErrTxnTooBig) before it runs the command
	// again alone (cluster/fsm apply), so a count is never bumped twice.
	//
	// Five writes: the message in its history entry, each side's sync
	// entry, the conversation's summary and the dedupe key (and the v/
	// index entries with a conversation's first message). Until counts
	// were kept there was an i/{to}/{from}/{id} key, walked to count
	// unread, until x/ each side had its summary (w/), and until bodies
	// moved into c/ the body had its own key (m/): none is written any
	// more (old ones are left in place and read).
	// The sender's sync entry and dedupe key name the recipient, the
	// recipient's names the sender.
	start := len(kb.b)
	kb.b = appendLocator(kb.b, c.ID, c.To)
	toLoc := kb.b[start:len(kb.b):len(kb.b)]
	sets := [8][2][]byte{
		{ck, cv},
		{kb.keyN(seq, "s/", c.From, "/"), toLoc},
	}
	k := 2
	if c.To != c.From {
		start = len(kb.b)
		kb.b = appendLocator(kb.b, c.ID, c.From)
		fromLoc := kb.b[start:len(kb.b):len(kb.b)]
		sets[k] = [2][]byte{kb.keyN(seq, "s/", c.To, "/"), fromLoc}
		k++
	}
	sc.forget(conv)
	pk := kb.key("x/", conv)
	start = len(kb.b)
	kb.b = p.append(kb.b)
	sets[k] = [2][]byte{pk, kb.b[start:len(kb.b):len(kb.b)]}
	k++
	parties := [2][2]string{{c.From, c.To}, {c.To, c.From}}
	var started [2][2]string
	nStarted := 0
	for _, pt := range parties[:sides(c.From, c.To)] {
		if !listed[sideOf(pt[0], pt[1])] {
			sets[k] = [2][]byte{kb.key("v/", pt[0], "/", pt[1]), nil}
			k++
			if c.To != c.From {
				started[nStarted] = pt
				nStarted++
			}
		}
	}
	sets[k] = [2][]byte{dk, syncRef(&kb, seq)}
	if err := byID.write(tx); err != nil {
		return nil, err
	}
	for _, kv := range sets[:k+1] {
		if err := tx.Set(kv[0], kv[1]); err != nil {
			return nil, err
		}
	}
	res := &applied{ID: c.ID, Payload: c.Payload, after: after, cache: sc, pair: pairWrite{conv: conv, p: p}, cids: st.cids,
		started: started, nStarted: nStarted, startedTold: st.started}
	res.setLive(st.live, c, at)
	return res, nil
}

// setLive makes AfterCommit deliver the stored message live (l nil: no
// live delivery).
func (a *applied) setLive(l *live, c msgCmd, at fsm.Position) {
	if l != nil {
		a.live = l
		a.lm = liveMessage{id: c.ID, from: c.From, to: c.To, group: c.Group, payload: c.Payload, appended: at.Appended}
	}
}

// byIDWrites are what a message writes for lookups by ID rather than by
// conversation, written with its own keys once every read is done.
type byIDWrites struct {
	st     *fsmState
	staged bool // the push outbox staged it
	id     snowflake.ID
	conv   string
}

func (w byIDWrites) write(tx *badger.Txn) error {
	if w.staged {
		// The push sender finds a staged message by ID (Service.Message):
		// a pointer from m/{id} to its conversation. Messages nobody
		// pushes (most direct ones) have none.
		if err := tx.Set(msgKey(w.id), append([]byte{pointerTag}, w.conv...)); err != nil {
			return err
		}
	}
	return w.st.top.raise(tx, w.id)
}

// applyReadCursor moves a read cursor forward, clamped to the highest
// message ID of the conversation so that a client cannot mark messages
// that do not exist yet as read. A cursor for a conversation without
// messages, or one that would not move forward, is a no-op (no error: a
// stale receipt is normal, e.g. from a second device).
//
// A cursor that moves recomputes the reader's kept unread count by
// walking the conversation's history above the new cursor (bounded: the
// walk stops after unreadCap messages from others), and, once committed,
// tells the reader's devices connected to this node (l: see readEvent).
func applyReadCursor(tx *badger.Txn, at fsm.Position, payload []byte, sc *summaryCache, l *live) (any, error) {
	c, err := decodeCursorCmd(payload)
	if err != nil {
		return nil, err
	}
	if c.Group != "" {
		return applyGroupCursor(tx, at, c, l)
	}
	conv := c.conv()
	p, found, _, err := sc.keptPair(tx, c.Reader, c.Peer, conv)
	if err != nil {
		return nil, err
	}
	upTo, err := clampToTop(tx, conv, c.UpTo, p.LastID, found)
	if err != nil {
		return nil, err
	}
	ck := cursorKey(c.Reader, conv)
	cur, _, err := getCursor(tx, ck)
	if err != nil {
		return nil, err
	}
	r := sideOf(c.Reader, c.Peer)
	if upTo < cur || upTo == cur && (!found || p.Unread[r] == 0) {
		return cur, nil
	}
	if found {
		total, own, err := countAbove(tx, conv, upTo, c.Reader)
		if err != nil {
			return nil, err
		}
		if upTo == cur && total-own == p.Unread[r] {
			// A read at the cursor again changes something only when a
			// late message of another region below the cursor counts as
			// unread (see applyMessage): the cursor may be at the newest
			// message already and could not move past it.
			return cur, nil
		}
		p.Cursor[r], p.Unread[r] = upTo, total-own
		sc.forget(conv)
		if err := tx.Set(pairKey(conv), p.encode()); err != nil {
			return nil, err
		}
		if err := tx.Set(ck, be64(uint64(upTo))); err != nil {
			return nil, err
		}
		// Every writer of a summary hands the cache what it wrote, in
		// command order, or a later command's value could be overtaken
		// by an earlier one's.
		moved := &cursorMoved{UpTo: upTo, cache: sc, pair: pairWrite{conv: conv, p: p}}
		if strings.IndexByte(c.Reader, '@') < 0 { // a user of another region is told by their region
			moved.told = readEvent{live: l, reader: c.Reader, peer: c.Peer, upTo: upTo, unread: int(min(p.Unread[r], unreadCap)), appended: at.Appended}
		}
		return moved, nil
	}
	if err := tx.Set(ck, be64(uint64(upTo))); err != nil {
		return nil, err
	}
	return upTo, nil
}

// cursorMoved is the result of a direct cursor move that rewrote the
// reader's summary.
type cursorMoved struct {
	UpTo  snowflake.ID
	cache *summaryCache
	pair  pairWrite
	told  readEvent
}

// AfterCommit gives the summary written to the cache and tells the
// reader's devices.
func (c *cursorMoved) AfterCommit() {
	c.cache.committed(c.pair)
	c.told.deliver()
}

// groupCursorMoved is the result of a group cursor move: the cursor,
// and what the reader's devices are told once it is committed.
type groupCursorMoved struct {
	UpTo snowflake.ID
	told readEvent
}

// AfterCommit tells the reader's devices.
func (c *groupCursorMoved) AfterCommit() { c.told.deliver() }

// clampToTop clamps a cursor to the conversation's highest message ID:
// the summary's (lastID) when there is one (found), else the history's
// (no summary: no message either way, as both sides get one with the
// first message; asked of the history to stay as before).
func clampToTop(tx *badger.Txn, conv string, upTo, lastID snowflake.ID, found bool) (snowflake.ID, error) {
	if !found {
		t, err := lastIndexed(tx, convPrefix(conv))
		if err != nil {
			return 0, err
		}
		lastID = snowflake.ID(t)
	}
	return min(upTo, lastID), nil
}

// applyGroupCursor moves a member's read cursor of a group (see
// memberCursor for what is kept with it).
func applyGroupCursor(tx *badger.Txn, at fsm.Position, c cursorCmd, l *live) (any, error) {
	conv := c.conv()
	gk := groupSummaryKey(c.Group)
	gsum, found, err := getSummary(tx, gk)
	if err != nil {
		return nil, err
	}
	upTo, err := clampToTop(tx, conv, c.UpTo, gsum.LastID, found)
	if err != nil {
		return nil, err
	}
	ck := cursorKey(c.Reader, conv)
	rec, recFound, err := getMemberCursor(tx, ck)
	if err != nil {
		return nil, err
	}
	if upTo < rec.UpTo {
		return rec.UpTo, nil
	}
	if upTo == rec.UpTo {
		// A read at the cursor again. Messages stored after the cursor
		// last moved with IDs below it (a late message: its node's clock
		// was behind, or another took its ID later and committed first)
		// count as unread until a read covers them: this one, as the
		// cursor may already be at the group's newest message and could
		// not move. Nothing else changes, so a read that finds nothing
		// kept unread writes nothing.
		if n, ok := rec.unread(gsum, recFound); !found || !ok || n == 0 {
			return rec.UpTo, nil
		}
	}
	rec.UpTo = upTo
	if found {
		// Every read before the first write, so that an error writes nothing.
		total, own, err := countAbove(tx, conv, upTo, c.Reader)
		if err != nil {
			return nil, err
		}
		if !gsum.Kept {
			// Start counting the group's messages now (Count's origin
			// does not matter, only differences are used).
			gsum.Kept, gsum.Count, gsum.Complete = true, 0, false
			if err := tx.Set(gk, gsum.encodeGroup()); err != nil {
				return nil, err
			}
		}
		rec.Kept, rec.Read, rec.ReadOwn = true, gsum.Count-total, rec.Own-own
	}
	if err := tx.Set(ck, rec.encode()); err != nil {
		return nil, err
	}
	if n, ok := rec.unread(gsum, true); found && ok {
		return &groupCursorMoved{UpTo: upTo, told: readEvent{live: l, reader: c.Reader, group: c.Group, upTo: upTo, unread: n, appended: at.Appended}}, nil
	}
	return upTo, nil
}

// directSummary reads uid's summary of the conversation with peer: w/
// (kept), else a 16-byte v/ (written before counts were kept). found is
// false when there is neither; listed says v/ exists.
func directSummary(tx *badger.Txn, uid, peer string) (sum summary, found, listed bool, err error) {
	sum, found, err = getSummary(tx, stateKey(uid, peer))
	if err != nil || found {
		return sum, found, found, err
	}
	it, err := tx.Get(summaryKey(uid, peer))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return summary{}, false, false, nil
	}
	if err != nil {
		return summary{}, false, false, err
	}
	err = it.Value(func(v []byte) error { sum, found = decodeSummary(v); return nil })
	return sum, found, true, err
}

// keptDirectSummary reads uid's summary of the conversation with peer in
// its kept form: a 16-byte one gets its unread count the way it was
// counted before (the i/ index above the cursor: every message of a
// conversation whose summaries are still 16 bytes was stored with its i/
// key), and a missing one starts at zero with the cursor, if any. listed
// says v/ exists (else the caller writes it).
func keptDirectSummary(tx *badger.Txn, uid, peer, conv string) (sum summary, listed bool, err error) {
	sum, found, listed, err := directSummary(tx, uid, peer)
	if err != nil || (found && sum.Kept) {
		return sum, listed, err
	}
	cur, _, err := getCursor(tx, cursorKey(uid, conv))
	if err != nil {
		return summary{}, false, err
	}
	sum.Kept, sum.Cursor, sum.Unread = true, cur, 0
	if found && uid != peer {
		n, err := legacyUnread(tx, uid, peer, cur)
		if err != nil {
			return summary{}, false, err
		}
		sum.Unread = uint64(n)
	}
	return sum, listed, nil
}

// sides is the number of sides a direct conversation has: 1 with oneself.
func sides(a, b string) int {
	if a == b {
		return 1
	}
	return 2
}

// getPair reads x/{conv}; found is false when it is absent or unreadable.
func getPair(tx *badger.Txn, conv string) (p pair, found bool, err error) {
	it, err := tx.Get(pairKey(conv))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return pair{}, false, nil
	}
	if err != nil {
		return pair{}, false, err
	}
	err = it.Value(func(v []byte) error { p, found = decodePair(v); return nil })
	return p, found, err
}

// keptPair reads the summary of the direct conversation between a and b
// in its kept form: x/, else built from each side's older summary
// (keptDirectSummary: w/, or a 16-byte v/ with the unread count counted
// as it was then). found is false when there is none (no message yet);
// listed says, per side, that v/ exists (always with x/: x/ is written
// only by a message, which writes both v/, or after one).
func keptPair(tx *badger.Txn, a, b, conv string) (p pair, found bool, listed [2]bool, err error) {
	p, found, err = getPair(tx, conv)
	if err != nil || found {
		return p, found, [2]bool{found, found}, err
	}
	lo, hi := a, b
	if hi < lo {
		lo, hi = hi, lo
	}
	parties := [2][2]string{{lo, hi}, {hi, lo}}
	for i, s := range parties[:sides(a, b)] {
		sum, lst, err := keptDirectSummary(tx, s[0], s[1], conv)
		if err != nil {
			return pair{}, false, listed, err
		}
		listed[i] = lst
		p.Unread[i], p.Cursor[i] = sum.Unread, sum.Cursor
		p.LastID, p.LastSeq = max(p.LastID, sum.LastID), max(p.LastSeq, sum.LastSeq)
	}
	return p, p.LastID != 0, listed, nil
}

// countAbove walks the history under prefix above upTo: total messages
// and those from me among them. It stops once it has seen unreadCap
// messages from others, so total-own is the unread count saturated at
// the cap.
func countAbove(tx *badger.Txn, conv string, upTo snowflake.ID, me string) (total, own uint64, err error) {
	prefix := convPrefix(conv)
	it := tx.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchSize: 100})
	defer it.Close()
	mb := []byte(me)
	for it.Seek(withID(prefix, uint64(upTo)+1)); it.ValidForPrefix(prefix) && total-own < unreadCap; it.Next() {
		total++
		if err := it.Item().Value(func(v []byte) error {
			if from, _, _, _ := readBody(conv, 0, v, false); bytes.Equal(from, mb) {
				own++
			}
			return nil
		}); err != nil {
			return 0, 0, err
		}
	}
	return total, own, nil
}

// applyGroupMessage stores a group message: the message, its history
// entry, ONE group sync entry and the group summary, whatever the size of
// the group (members find it through their groups when they read).
// Membership was checked by the proposing node: this handler cannot read
// the users service's keys.
func applyGroupMessage(tx *badger.Txn, seq uint64, c msgCmd, kb *keyBuf, ck, cv, dk, idb []byte, byID byIDWrites) (*applied, error) {
	gk := kb.key("gv/", c.Group)
	old, found, err := getSummary(tx, gk)
	if err != nil {
		return nil, err
	}
	sum := summary{LastID: c.ID, LastSeq: seq, Kept: true, Count: 1, Complete: !found}
	if found {
		if old.LastID > c.ID {
			sum.LastID = old.LastID // IDs may arrive out of order; keep the top of history
		}
		if old.Kept {
			sum.Count, sum.Complete, sum.Expired = old.Count+1, old.Complete, old.Expired
		}
	}
	// The sender's record counts their own messages, so that they are not
	// unread to them (see memberCursor).
	rk := kb.key("rc/", c.From, "/g:", c.Group)
	rec, recFound, err := getMemberCursor(tx, rk)
	if err != nil {
		return nil, err
	}
	if !recFound && sum.Complete {
		// Never read and no message before this one: the counts start at
		// the group's beginning, where Read and ReadOwn are zero.
		rec.Kept = true
	}
	rec.Own++
	// The dedupe key goes last, as for direct messages.
	// gs/ keeps the 8-byte ID (the group names the conversation); the
	// dedupe key needs the conversation with it.
	dv := appendLocator(make([]byte, 0, 8+len(c.Group)+2), c.ID, groupConv(c.Group))
	if err := byID.write(tx); err != nil {
		return nil, err
	}
	for _, kv := range [][2][]byte{
		{ck, cv},
		{kb.keyN(seq, "gs/", c.Group, "/"), idb},
		{gk, sum.encodeGroup()},
		{rk, rec.encode()},
		{dk, dv},
	} {
		if err := tx.Set(kv[0], kv[1]); err != nil {
			return nil, err
		}
	}
	return &applied{ID: c.ID, Payload: c.Payload}, nil
}

// getCursor reads a read cursor (the first 8 bytes of rc/: a direct
// cursor or either form of a member's group cursor); 0 when absent.
func getCursor(tx *badger.Txn, key []byte) (snowflake.ID, bool, error) {
	m, found, err := getMemberCursor(tx, key)
	return m.UpTo, found, err
}

// getMemberCursor reads an rc/ value in either form.
func getMemberCursor(tx *badger.Txn, key []byte) (m memberCursor, found bool, err error) {
	it, err := tx.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return memberCursor{}, false, nil
	}
	if err != nil {
		return memberCursor{}, false, err
	}
	err = it.Value(func(v []byte) error {
		var ok bool
		if m, ok = decodeMemberCursor(v); !ok {
			return fmt.Errorf("%w: read cursor of %d bytes", ErrBadCommand, len(v))
		}
		return nil
	})
	return m, err == nil, err
}

// getSummary reads a summary; found is false when the key is absent or
// holds something unreadable (treated as no summary, as the list does).
func getSummary(tx *badger.Txn, key []byte) (sum summary, found bool, err error) {
	it, err := tx.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return summary{}, false, nil
	}
	if err != nil {
		return summary{}, false, err
	}
	err = it.Value(func(v []byte) error { sum, found = decodeSummary(v); return nil })
	return sum, found, err
}

// lastIndexed returns the trailing number of the last key under prefix
// (0 when there is none).
func lastIndexed(tx *badger.Txn, prefix []byte) (uint64, error) {
	opts := badger.IteratorOptions{Reverse: true, Prefix: prefix}
	it := tx.NewIterator(opts)
	defer it.Close()
	// Reverse iteration must seek past the prefix: seeking to the prefix
	// itself lands before every key under it.
	it.Seek(append(append([]byte{}, prefix...), 0xff))
	if !it.ValidForPrefix(prefix) {
		return 0, nil
	}
	return tail8(it.Item().Key()), nil
}
