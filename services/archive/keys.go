package archive

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"strconv"
	"strings"

	"github.com/edgechat/edgechat/internal/snowflake"
)

// Key layout under r/arch/ (all written only by the FSM handlers in
// apply.go). User IDs never hold '/' or ':' (wire.ValidUserID), so every
// prefix below ends unambiguously. Numbers are 8-byte big-endian so that
// Badger's byte order is numeric order.
//
//	c/{convKey}/{id}          → the stored envelope (the exact bytes delivered), without
//	                            the head the key already names (see compactBody); in the
//	                            layout before bodies moved here, the sender's user ID only
//	m/{id}                    → before bodies moved to c/: the stored envelope JSON; since,
//	                            written only for a message the push outbox staged: a pointer
//	                            to its conversation (see pointerTag), for the by-ID lookup
//	top                       → the highest message ID stored since bodies moved to c/ (8 bytes)
//	s/{uid}/{seq}             → a locator of the message (per-user sync index in commit order,
//	                            sender and recipient): id(8) then the peer (see appendLocator);
//	                            8 bytes (the id alone, the body under m/) in the older layout
//	v/{uid}/{peer}            → empty: uid has a conversation with peer (written once, listed by
//	                            prefix); or a 16-byte summary written before counts were kept
//	x/{convKey}               → a direct conversation's summary with both sides' unread counts
//	                            and cursors (see pair), rewritten by each message
//	w/{uid}/{peer}            → uid's side of the summary, as written before x/ (read when
//	                            there is no x/; left in place once x/ is written)
//	rc/{uid}/d:{a}:{b}        → id (read cursor of a direct conversation)
//	rc/{uid}/g:{gid}          → a member's group cursor and counts (see memberCursor)
//	dedup/{from}/{cid}        → retried publishes, direct and group alike: for a direct
//	                            message a reference to the sender's s/ entry (see syncRef),
//	                            for a group's a locator (id, g:{gid}); 8 bytes (the id, the
//	                            body under m/) in the older layout
//	gs/{gid}/{seq}            → id (per-group sync index in commit order; the body is under
//	                            c/g:{gid}/{id}, or under m/{id} in the older layout)
//	gv/{gid}                  → group summary with its message count (see summary)
//	ud/{convKey}/{id}         → empty: the sender of message id to another region (direct, or
//	                            to a group homed there) was told it is undeliverable
//	                            (undeliverable.go); kept once the message is sealed, so that
//	                            a notice sent again tells nobody
//	i/{uid}/{peer}/{id}       → nil (what uid received from peer: written until unread
//	                            counts were kept, read only for 16-byte summaries)
//
// convKey is "d:"+min(a,b)+":"+max(a,b) for direct messages and "g:"+gid
// for groups. Group IDs never hold '/' or ':' either (wire.ValidGroupID).
// A group message writes no per-member key: members reach it through
// gs/ and gv/ of the groups they are in when they read (see read.go), so
// its cost does not grow with the group.
//
// The summary that every message rewrites lives in x/ (before, in w/),
// apart from the v/ index that lists a user's conversations: Badger
// keeps the versions a key was overwritten with until compaction drops
// them, and an iterator steps over each, so listing a busy user's
// conversations by iterating rewritten keys costs as many steps as
// recent messages. v/ keys are written once and are iterated; x/ keys
// are read with Get, which finds the newest version directly.
//
// Per message: a direct message writes c/, s/ of both sides, x/ and
// dedup/ (5 keys; 4 to oneself; the first message of a conversation
// also writes v/ of both sides); a group message writes c/, gs/, gv/,
// the sender's rc/ (their own-message count) and dedup/ (5 keys,
// whatever the group's size). top is rewritten by every message too,
// but a Raft entry is one transaction, and a transaction writes a key
// once: it costs one key per entry, not per message. Unread counts are
// kept by these writes, so listing conversations reads one summary (and
// for a group one cursor) per conversation, whatever the history's size.
// Every key costs the same on every node whatever its size (an entry in
// the transaction, the memtable's skiplist, the WAL, an L0 block), which
// is why the body moved into the history key: one key less per message,
// and a history page reads its bodies from consecutive keys (a few
// blocks) instead of one m/ Get per message spread over the whole store.
//
// Formats: summaries and group cursors written before unread counts were
// kept (16-byte summaries, 8-byte cursors) are still read, their unread
// counts counted as they were then, and the FSM rewrites them in the new
// form when it next touches them; replaying an old log gives the same
// state on every node because the handlers are deterministic. Messages
// stored before bodies moved to c/ stay where they are and are read
// there: a c/ value that is a user ID (it starts with a letter; the new
// forms start with a tag byte or '{') names only the sender (the body is
// under m/), an 8-byte s/ or dedup/ value is an ID whose body is under
// m/, and the highest ID is the larger of top and the last m/ key
// (services/archive/testdata/oldformat is a store written by the older
// layout; TestOldFormatStoreReads reads it). A node of an earlier
// version cannot read the new forms (it would take a c/ value for a
// sender, refuse the longer s/ and dedup/ values as malformed, and find
// no m/ for new messages): it must not be handed a snapshot of a newer
// node, nor be restarted on a database a newer version wrote. The commands in the Raft log did not change, so an old
// log replays on a new node (writing the new layout).
const keyRoot = "r/arch/"

func be64(n uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], n)
	return b[:]
}

func cat(parts ...[]byte) []byte {
	n := len(keyRoot)
	for _, p := range parts {
		n += len(p)
	}
	k := make([]byte, 0, n)
	k = append(k, keyRoot...)
	for _, p := range parts {
		k = append(k, p...)
	}
	return k
}

func directConv(a, b string) string {
	if b < a {
		a, b = b, a
	}
	return "d:" + a + ":" + b
}

func msgPrefix() []byte                   { return cat([]byte("m/")) }
func topKey() []byte                      { return cat([]byte("top")) }
func msgKey(id snowflake.ID) []byte       { return cat([]byte("m/"), be64(uint64(id))) }
func convPrefix(conv string) []byte       { return cat([]byte("c/" + conv + "/")) }
func syncPrefix(uid string) []byte        { return cat([]byte("s/" + uid + "/")) }
func inboxPrefix(uid, peer string) []byte { return cat([]byte("i/" + uid + "/" + peer + "/")) }
func summaryPrefix(uid string) []byte     { return cat([]byte("v/" + uid + "/")) }
func summaryKey(uid, peer string) []byte  { return cat([]byte("v/" + uid + "/" + peer)) }
func stateKey(uid, peer string) []byte    { return cat([]byte("w/" + uid + "/" + peer)) }
func pairKey(conv string) []byte          { return cat([]byte("x/" + conv)) }
func cursorKey(uid, conv string) []byte   { return cat([]byte("rc/" + uid + "/" + conv)) }
func dedupKey(from, cid string) []byte    { return cat([]byte("dedup/" + from + "/" + cid)) }
func dedupPrefix() []byte                 { return cat([]byte("dedup/")) }
func groupConv(gid string) string         { return "g:" + gid }
func groupSyncPrefix(gid string) []byte   { return cat([]byte("gs/" + gid + "/")) }
func groupSummaryKey(gid string) []byte   { return cat([]byte("gv/" + gid)) }

// convKey is the history key of message id in conversation conv.
func convKey(conv string, id snowflake.ID) []byte {
	return cat([]byte("c/"+conv+"/"), be64(uint64(id)))
}

// keyBuf builds the keys and small values of one command in one buffer
// (one allocation instead of two or three per key). A slice it returned
// stays valid when the buffer grows (it keeps the old array), and Badger
// keeps the slices a transaction was given only until it commits.
type keyBuf struct{ b []byte }

func newKeyBuf(n int) keyBuf { return keyBuf{b: make([]byte, 0, n)} }

// key is keyRoot followed by parts.
func (k *keyBuf) key(parts ...string) []byte {
	start := len(k.b)
	k.b = append(k.b, keyRoot...)
	for _, p := range parts {
		k.b = append(k.b, p...)
	}
	return k.b[start:len(k.b):len(k.b)]
}

// keyN is key(parts...) followed by n (8 bytes, big-endian).
func (k *keyBuf) keyN(n uint64, parts ...string) []byte {
	start := len(k.b)
	k.key(parts...)
	k.b = binary.BigEndian.AppendUint64(k.b, n)
	return k.b[start:len(k.b):len(k.b)]
}

// bytes copies a string into the buffer.
func (k *keyBuf) bytes(s string) []byte {
	start := len(k.b)
	k.b = append(k.b, s...)
	return k.b[start:len(k.b):len(k.b)]
}

// u64 is n as 8 bytes.
func (k *keyBuf) u64(n uint64) []byte {
	start := len(k.b)
	k.b = binary.BigEndian.AppendUint64(k.b, n)
	return k.b[start:len(k.b):len(k.b)]
}

// A c/ value is the stored envelope, kept compact when it has the head
// the server always writes (wire.Envelope's field order, in its fast
// path and in encoding/json alike):
//
//	{"id":"<id>","from":"<from>","to":"<to>",      a direct message
//	{"id":"<id>","from":"<from>","group":"<gid>",  a group message
//
// The key already holds the ID and the conversation, so the value drops
// that head: in ID order (m/) consecutive envelopes shared most of it and
// zstd took it away, in conversation order they do not (+14 B per message
// on disk at 200k before this). The head is rebuilt on read, byte for
// byte. Forms of a c/ value:
//
//	compactDirect(1) side(1) rest   side 0: from is the convKey's first user
//	compactGroup(1) len(from)(uvarint) from rest
//	'{' …                           an envelope of another head, whole
//	a user ID                       the older layout: the sender; the body is under m/
const (
	compactDirect = 0x02
	compactGroup  = 0x03
)

// appendBodyHead appends the head a stored envelope begins with.
func appendBodyHead(b []byte, id snowflake.ID, from, to, group string) []byte {
	b = append(b, `{"id":"`...)
	b = strconv.AppendUint(b, uint64(id), 10)
	b = append(b, `","from":"`...)
	b = append(b, from...)
	if group == "" {
		b = append(b, `","to":"`...)
		b = append(b, to...)
	} else {
		b = append(b, `","group":"`...)
		b = append(b, group...)
	}
	return append(b, `",`...)
}

// compactBody is the c/ value of a message (built in kb).
func compactBody(kb *keyBuf, payload []byte, id snowflake.ID, from, to, group string) []byte {
	start := len(kb.b)
	kb.b = appendBodyHead(kb.b, id, from, to, group)
	head := len(kb.b) - start
	ok := bytes.HasPrefix(payload, kb.b[start:])
	kb.b = kb.b[:start]
	if !ok {
		return payload
	}
	if group == "" {
		side := byte(0)
		if from > to {
			side = 1
		}
		kb.b = append(kb.b, compactDirect, side)
	} else {
		kb.b = append(kb.b, compactGroup)
		kb.b = binary.AppendUvarint(kb.b, uint64(len(from)))
		kb.b = append(kb.b, from...)
	}
	kb.b = append(kb.b, payload[head:]...)
	return kb.b[start:len(kb.b):len(kb.b)]
}

// readBody reads the c/ value v of message id in conversation conv:
// with wantBody the stored envelope (hasBody; a fresh slice), without it
// the sender (from; the readers that want one do not want the other,
// and a sync page would allocate the sender of every message for
// nothing). A value of the older layout has no body and is the sender
// (the body is under m/). ok is false for a value that is none of the
// forms.
func readBody(conv string, id snowflake.ID, v []byte, wantBody bool) (from, body []byte, hasBody, ok bool) {
	if len(v) == 0 {
		return nil, nil, false, false
	}
	var to, group string
	var rest []byte
	switch v[0] {
	case '{':
		if wantBody {
			return nil, append([]byte(nil), v...), true, true
		}
		return senderOf(v), nil, true, true
	case compactDirect:
		lo, hi, found := strings.Cut(strings.TrimPrefix(conv, "d:"), ":")
		if len(v) < 2 || !found || !strings.HasPrefix(conv, "d:") {
			return nil, nil, false, false
		}
		f := lo
		to = hi
		if v[1] == 1 {
			f, to = hi, lo
		}
		if !wantBody {
			return []byte(f), nil, true, true
		}
		rest = v[2:]
		body = appendBodyHead(make([]byte, 0, 48+len(f)+len(to)+len(rest)), id, f, to, "")
		return nil, append(body, rest...), true, true
	case compactGroup:
		n, k := binary.Uvarint(v[1:])
		if k <= 0 || n > uint64(len(v)-1-k) || !strings.HasPrefix(conv, "g:") {
			return nil, nil, false, false
		}
		from, rest, group = v[1+k:1+k+int(n)], v[1+k+int(n):], conv[2:]
		if !wantBody {
			return from, nil, true, true
		}
		body = appendBodyHead(make([]byte, 0, 48+len(from)+len(group)+len(rest)), id, string(from), "", group)
		return nil, append(body, rest...), true, true
	default:
		if wantBody {
			return nil, nil, false, true
		}
		return v, nil, false, true
	}
}

// convOfKey is the conversation of a c/ key.
func convOfKey(ck []byte) string {
	return string(ck[len(keyRoot)+2 : len(ck)-9])
}

// envelopeHead is how every stored envelope begins (see appendBodyHead).
const envelopeHead = `{"id":"`

// senderOf is the "from" of a stored envelope kept whole: read from its
// head (user IDs need no escaping), or by decoding it if it is not in
// that form.
func senderOf(env []byte) []byte {
	if rest, ok := bytes.CutPrefix(env, []byte(envelopeHead)); ok {
		if i := bytes.IndexByte(rest, '"'); i >= 0 {
			if rest, ok = bytes.CutPrefix(rest[i+1:], []byte(`,"from":"`)); ok {
				if j := bytes.IndexByte(rest, '"'); j >= 0 && bytes.IndexByte(rest[:j], '\\') < 0 {
					return rest[:j]
				}
			}
		}
	}
	var e struct {
		From string `json:"from"`
	}
	if json.Unmarshal(env, &e) != nil {
		return nil
	}
	return []byte(e.From)
}

// pointerTag starts an m/ value that points at the conversation holding
// the message (an m/ value of the older layout is an envelope, which
// starts with '{'):
//
//	pointerTag(1) convKey
const pointerTag = 0x01

// appendLocator appends an s/ or dedup/ value: the ID and what, with
// the user the key belongs to (owner), names the conversation the
// message is stored in: the other user of a direct conversation, or
// "g:"+gid (a user ID holds no ':'). The peer rather than the whole
// conversation key: these values are written two or three times per
// message.
func appendLocator(b []byte, id snowflake.ID, other string) []byte {
	b = binary.BigEndian.AppendUint64(b, uint64(id))
	return append(b, other...)
}

// decodeLocator reads an s/ or dedup/ value of owner's key: the ID and
// its conversation, "" for an 8-byte value of the older layout (the
// body is under m/{id}).
func decodeLocator(owner string, v []byte) (id snowflake.ID, conv string, ok bool) {
	if len(v) < 8 {
		return 0, "", false
	}
	id = snowflake.ID(binary.BigEndian.Uint64(v))
	switch other := string(v[8:]); {
	case other == "":
	case strings.HasPrefix(other, "g:"):
		conv = other
	default:
		conv = directConv(owner, other)
	}
	return id, conv, true
}

// locatedKey is the c/ key of the message an s/ or dedup/ value of
// owner's key names (v, see decodeLocator), built in one allocation (a
// sync page builds a thousand); nil for an 8-byte value of the older
// layout (the body is under m/).
func locatedKey(owner string, v []byte) []byte {
	if len(v) <= 8 {
		return nil
	}
	other := v[8:]
	k := make([]byte, 0, len(keyRoot)+5+len(owner)+len(other)+8)
	k = append(k, keyRoot+"c/"...)
	if bytes.HasPrefix(other, []byte("g:")) {
		k = append(k, other...)
	} else if string(other) < owner {
		k = append(append(append(append(k, "d:"...), other...), ':'), owner...)
	} else {
		k = append(append(append(append(k, "d:"...), owner...), ':'), other...)
	}
	k = append(k, '/')
	return append(k, v[:8]...)
}

// A direct message's dedupe value refers to its sender's sync entry
// (which names the message) instead of repeating the ID and the peer:
//
//	syncRefTag(1) seq(8)
//
// 9 bytes, neither an ID of the older layout (8) nor a locator (8 + a
// name of at least 3). Retries are rare; the dedupe keys are forever.
const (
	syncRefTag = 0x01
	syncRefLen = 9
)

// syncRef is the dedupe value of a direct message at position seq.
func syncRef(kb *keyBuf, seq uint64) []byte {
	start := len(kb.b)
	kb.b = append(kb.b, syncRefTag)
	kb.b = binary.BigEndian.AppendUint64(kb.b, seq)
	return kb.b[start:len(kb.b):len(kb.b)]
}

func withID(prefix []byte, n uint64) []byte {
	k := make([]byte, 0, len(prefix)+8)
	k = append(k, prefix...)
	return append(k, be64(n)...)
}

// tail8 reads the trailing big-endian number of an index key.
func tail8(key []byte) uint64 {
	if len(key) < 8 {
		return 0
	}
	return binary.BigEndian.Uint64(key[len(key)-8:])
}

// summary is one side of a direct conversation's summary (x/, see pair;
// the value of w/{uid}/{peer} before x/) and the value of gv/{gid} (a
// group). Three encodings exist:
//
//	16 bytes  lastID(8) lastSeq(8)                           written before counts were kept (v/ and gv/)
//	32 bytes  lastID(8) lastSeq(8) unread(8) cursor(8)        w/: a direct conversation with its kept unread count
//	25 bytes  lastID(8) lastSeq(8) count(8) flags(1)          gv/: a group with its message count
//	33 bytes  lastID(8) lastSeq(8) count(8) flags(1) expired(8)  gv/: the same, once retention
//	                                                          expired some of its messages
//
// A 16-byte summary is still read (Kept false): its unread count is
// counted as before (see unread and groupUnread), and the FSM writes the
// new form (x/ for a direct conversation, where it then wins over v/'s)
// the next time it touches the conversation.
type summary struct {
	LastID  snowflake.ID // highest message ID in the conversation (the top of its history)
	LastSeq uint64       // commit position of its latest message (activity order)
	Kept    bool         // the fields below are valid (not a 16-byte summary)

	// Direct conversations (v/{uid}/{peer}).
	Unread uint64       // messages from peer with an ID above Cursor, saturated at unreadCap
	Cursor snowflake.ID // uid's read cursor (the same as rc/{uid}/{convKey})
	// PeerCursor is the peer's read cursor (kept pairs only, 0 else; not
	// part of the encoded summary: read from the other side of x/).
	PeerCursor snowflake.ID

	// Groups (gv/{gid}).
	Count    uint64 // messages stored since counting began (modular: only differences are used)
	Complete bool   // counting began with the group's first message
	// Expired counts the group's messages retention deleted, oldest
	// first: with Complete, the first Expired messages of the count are
	// gone (see memberCursor.unread). Written only once it is not zero
	// (the 33-byte form), so a group retention never touched keeps the
	// 25-byte form earlier versions read.
	Expired uint64
}

const (
	summaryLegacyLen = 16
	summaryDirectLen = 32
	summaryGroupLen  = 25
	summaryGroupXLen = 33
	groupComplete    = 1 // the flag bit of Complete
)

func (s summary) appendHead(b []byte) []byte {
	b = binary.BigEndian.AppendUint64(b, uint64(s.LastID))
	return binary.BigEndian.AppendUint64(b, s.LastSeq)
}

// encodeDirect is the 32-byte v/ value.
func (s summary) encodeDirect() []byte {
	b := s.appendHead(make([]byte, 0, summaryDirectLen))
	b = binary.BigEndian.AppendUint64(b, s.Unread)
	return binary.BigEndian.AppendUint64(b, uint64(s.Cursor))
}

// encodeGroup is the gv/ value: 25 bytes, 33 once Expired is not zero.
func (s summary) encodeGroup() []byte {
	b := s.appendHead(make([]byte, 0, summaryGroupXLen))
	b = binary.BigEndian.AppendUint64(b, s.Count)
	var flags byte
	if s.Complete {
		flags |= groupComplete
	}
	b = append(b, flags)
	if s.Expired != 0 {
		b = binary.BigEndian.AppendUint64(b, s.Expired)
	}
	return b
}

func decodeSummary(v []byte) (summary, bool) {
	if len(v) != summaryLegacyLen && len(v) != summaryDirectLen && len(v) != summaryGroupLen && len(v) != summaryGroupXLen {
		return summary{}, false
	}
	s := summary{LastID: snowflake.ID(binary.BigEndian.Uint64(v)), LastSeq: binary.BigEndian.Uint64(v[8:])}
	switch len(v) {
	case summaryDirectLen:
		s.Kept = true
		s.Unread = binary.BigEndian.Uint64(v[16:])
		s.Cursor = snowflake.ID(binary.BigEndian.Uint64(v[24:]))
	case summaryGroupLen, summaryGroupXLen:
		s.Kept = true
		s.Count = binary.BigEndian.Uint64(v[16:])
		s.Complete = v[24]&groupComplete != 0
		if len(v) == summaryGroupXLen {
			s.Expired = binary.BigEndian.Uint64(v[25:])
		}
	}
	return s, true
}

// pair is the value of x/{convKey}: a direct conversation's summary for
// both of its users, side 0 the first user of convKey (the smaller ID),
// side 1 the other (a conversation with oneself uses side 0 only):
//
//	48 bytes  lastID(8) lastSeq(8) unread0(8) cursor0(8) unread1(8) cursor1(8)
//
// Both sides' summaries (w/) changed with every message, and their
// lastID and lastSeq were the same: one key instead of two per message.
// A conversation without x/ is read from its w/ (or older) summaries and
// gets x/ the next time the FSM touches it; replaying an old log gives
// the same state everywhere (the handlers are deterministic).
type pair struct {
	LastID  snowflake.ID
	LastSeq uint64
	Unread  [2]uint64
	Cursor  [2]snowflake.ID
}

const pairLen = 48

// sideOf is uid's side of its conversation with peer.
func sideOf(uid, peer string) int {
	if peer < uid {
		return 1
	}
	return 0
}

// side is one side's summary in the kept form.
func (p pair) side(i int) summary {
	return summary{LastID: p.LastID, LastSeq: p.LastSeq, Kept: true, Unread: p.Unread[i], Cursor: p.Cursor[i], PeerCursor: p.Cursor[1-i]}
}

func (p pair) encode() []byte { return p.append(make([]byte, 0, pairLen)) }

func (p pair) append(b []byte) []byte {
	b = binary.BigEndian.AppendUint64(b, uint64(p.LastID))
	b = binary.BigEndian.AppendUint64(b, p.LastSeq)
	for i := range 2 {
		b = binary.BigEndian.AppendUint64(b, p.Unread[i])
		b = binary.BigEndian.AppendUint64(b, uint64(p.Cursor[i]))
	}
	return b
}

func decodePair(v []byte) (pair, bool) {
	if len(v) != pairLen {
		return pair{}, false
	}
	p := pair{LastID: snowflake.ID(binary.BigEndian.Uint64(v)), LastSeq: binary.BigEndian.Uint64(v[8:])}
	for i := range 2 {
		p.Unread[i] = binary.BigEndian.Uint64(v[16+16*i:])
		p.Cursor[i] = snowflake.ID(binary.BigEndian.Uint64(v[24+16*i:]))
	}
	return p, true
}

// memberCursor is the value of rc/{uid}/g:{gid}, a member's read cursor
// of a group with what the member's unread count is derived from:
//
//	8 bytes   upTo(8)                                          written before counts were kept
//	33 bytes  upTo(8) read(8) readOwn(8) own(8) flags(1)
//
// Own counts the member's messages to the group (from when the record
// was created). When the cursor moves, the FSM walks the group's history
// above the new cursor once: Read is the group's Count minus the messages
// above the cursor and ReadOwn is Own minus the member's messages among
// them. The unread count is then, at any later time,
//
//	(gv.Count − Read) − (Own − ReadOwn)
//
// the messages above the cursor or stored since, less the member's own
// among them: O(1) to read, and a group message writes only the group
// summary and its sender's record, however large the group. The counters
// are modular (uint64): their origins cancel out, only differences
// matter. Kept (flag bit 1) says Read and ReadOwn are valid; a record
// without it (an 8-byte one, or one created by a send in a group whose
// earlier messages were stored before counts were kept) falls back to
// counting, as before.
type memberCursor struct {
	UpTo    snowflake.ID
	Read    uint64
	ReadOwn uint64
	Own     uint64
	Kept    bool
}

const (
	memberCursorLegacyLen = 8
	memberCursorLen       = 33
	memberKept            = 1
)

func (m memberCursor) encode() []byte {
	b := make([]byte, 0, memberCursorLen)
	b = binary.BigEndian.AppendUint64(b, uint64(m.UpTo))
	b = binary.BigEndian.AppendUint64(b, m.Read)
	b = binary.BigEndian.AppendUint64(b, m.ReadOwn)
	b = binary.BigEndian.AppendUint64(b, m.Own)
	var flags byte
	if m.Kept {
		flags |= memberKept
	}
	return append(b, flags)
}

func decodeMemberCursor(v []byte) (memberCursor, bool) {
	switch len(v) {
	case memberCursorLegacyLen:
		return memberCursor{UpTo: snowflake.ID(binary.BigEndian.Uint64(v))}, true
	case memberCursorLen:
		return memberCursor{
			UpTo:    snowflake.ID(binary.BigEndian.Uint64(v)),
			Read:    binary.BigEndian.Uint64(v[8:]),
			ReadOwn: binary.BigEndian.Uint64(v[16:]),
			Own:     binary.BigEndian.Uint64(v[24:]),
			Kept:    v[32]&memberKept != 0,
		}, true
	}
	return memberCursor{}, false
}

// unread is the member's kept unread count in a group with summary g,
// capped; ok is false when it is not kept and must be counted.
//
// Retention (retention.go) deletes a group's oldest messages: in a
// Complete group the first g.Expired messages of the count are gone, so
// a member whose cursor is below them (Read < Expired) no longer has the
// Expired−Read of them above the cursor unread; the member's own among
// them were taken off Own when they expired (see applyRetention), so
// that they stop cancelling out. A group whose count began late
// (!Complete) cannot place its expired messages in the count: its
// members keep counting expired messages above their cursors until the
// cursors move past them (capped at unreadCap, as before).
func (m memberCursor) unread(g summary, found bool) (n int, ok bool) {
	if !g.Kept {
		return 0, false
	}
	var u int64
	switch {
	case found && m.Kept:
		u = int64(g.Count-m.Read) - int64(m.Own-m.ReadOwn)
		if g.Complete {
			if gone := int64(g.Expired - m.Read); gone > 0 {
				u -= gone
			}
		}
	case !found && g.Complete:
		u = int64(g.Count - g.Expired) // never read, never sent: every message left is from others
	default:
		return 0, false
	}
	return int(min(max(u, 0), unreadCap)), true
}
