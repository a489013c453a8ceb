package archive

import (
	"encoding/binary"

	"github.com/edgechat/edgechat/internal/snowflake"
)

// Key layout under r/arch/ (all written only by the FSM handlers in
// apply.go). User IDs never hold '/' or ':' (wire.ValidUserID), so every
// prefix below ends unambiguously. Numbers are 8-byte big-endian so that
// Badger's byte order is numeric order.
//
//	m/{id}                    → the stored envelope JSON (the exact bytes delivered)
//	c/{convKey}/{id}          → sender uid (history, newest first by reverse scan)
//	s/{uid}/{seq}             → id (per-user sync index in commit order, sender and recipient)
//	i/{uid}/{peer}/{id}       → nil (what uid received from peer; unread counts)
//	v/{uid}/{peer}            → lastID(8) lastSeq(8) (conversation summary)
//	rc/{uid}/{convKey}        → id (read cursor)
//	dedup/{from}/{cid}        → id (retried publishes, direct and group alike)
//	gs/{gid}/{seq}            → id (per-group sync index in commit order)
//	gv/{gid}                  → lastID(8) lastSeq(8) (group summary)
//
// convKey is "d:"+min(a,b)+":"+max(a,b) for direct messages and "g:"+gid
// for groups. Group IDs never hold '/' or ':' either (wire.ValidGroupID).
// A group message writes no per-member key: members reach it through
// gs/ and gv/ of the groups they are in when they read (see read.go), so
// its cost does not grow with the group.
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
func msgKey(id snowflake.ID) []byte       { return cat([]byte("m/"), be64(uint64(id))) }
func convPrefix(conv string) []byte       { return cat([]byte("c/" + conv + "/")) }
func syncPrefix(uid string) []byte        { return cat([]byte("s/" + uid + "/")) }
func inboxPrefix(uid, peer string) []byte { return cat([]byte("i/" + uid + "/" + peer + "/")) }
func summaryPrefix(uid string) []byte     { return cat([]byte("v/" + uid + "/")) }
func summaryKey(uid, peer string) []byte  { return cat([]byte("v/" + uid + "/" + peer)) }
func cursorKey(uid, conv string) []byte   { return cat([]byte("rc/" + uid + "/" + conv)) }
func dedupKey(from, cid string) []byte    { return cat([]byte("dedup/" + from + "/" + cid)) }
func groupConv(gid string) string         { return "g:" + gid }
func groupSyncPrefix(gid string) []byte   { return cat([]byte("gs/" + gid + "/")) }
func groupSummaryKey(gid string) []byte   { return cat([]byte("gv/" + gid)) }

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

// summary is the value of v/{uid}/{peer} and of gv/{gid}.
type summary struct {
	LastID  snowflake.ID // highest message ID in the conversation (the top of its history)
	LastSeq uint64       // commit position of its latest message (activity order)
}

func (s summary) encode() []byte {
	b := make([]byte, 16)
	binary.BigEndian.PutUint64(b, uint64(s.LastID))
	binary.BigEndian.PutUint64(b[8:], s.LastSeq)
	return b
}

func decodeSummary(v []byte) (summary, bool) {
	if len(v) != 16 {
		return summary{}, false
	}
	return summary{LastID: snowflake.ID(binary.BigEndian.Uint64(v)), LastSeq: binary.BigEndian.Uint64(v[8:])}, true
}
