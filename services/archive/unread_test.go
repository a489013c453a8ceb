package archive

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/cluster/fsm/fsmtest"
	"github.com/edgechat/edgechat/internal/snowflake"
	"github.com/edgechat/edgechat/internal/wire"
)

// unreadModel drives the FSM with raw commands (IDs chosen by the test)
// and checks the kept unread counts against a count on the history, which
// is what unread means: messages from others above the reader's cursor,
// and in a direct conversation the peer's messages stored below it
// since it last moved (late: a node's clock behind), which the model
// counts as they are stored.
type unreadModel struct {
	t      *testing.T
	e      *env
	users  []string
	group  string
	nextID snowflake.ID
	n      int
	used   map[snowflake.ID]bool
	late   map[string]int // by reader and direct conversation
}

// fresh returns id, or the next ID above it that no message has.
func (m *unreadModel) fresh(id snowflake.ID) snowflake.ID {
	for m.used[id] {
		id++
	}
	m.used[id] = true
	return id
}

func newUnreadModel(t *testing.T, opts ...envOpt) *unreadModel {
	e := newEnv(t, append([]envOpt{withGroups()}, opts...)...)
	m := &unreadModel{t: t, e: e, users: []string{"alice", "bob", "carol"}, group: "team", nextID: 1 << 20, used: map[snowflake.ID]bool{},
		late: map[string]int{}}
	e.groups.add(m.group, m.users...)
	return m
}

func (m *unreadModel) message(from, to, gid string, id snowflake.ID) {
	m.t.Helper()
	m.n++
	id = m.fresh(id)
	if gid == "" && from != to {
		if cur := m.readUpTo(to, from); id <= cur {
			m.late[to+"|"+directConv(to, from)]++ // stored below the reader's cursor: unread
		}
	}
	env := text(fmt.Sprint("m", m.n), "x")
	env.ID, env.From, env.To, env.Group = id, from, to, gid
	c := msgCmd{ID: id, From: from, To: to, Group: gid, CID: env.CID, Payload: env.Marshal()}
	if _, err := m.e.prop.Propose(context.Background(), wire.CmdMessage, c.encode()); err != nil {
		m.t.Fatalf("message %d %s→%s%s: %v", id, from, to, gid, err)
	}
}

func (m *unreadModel) cursor(reader, peer, gid string, upTo snowflake.ID) {
	m.t.Helper()
	if gid == "" && upTo >= m.readUpTo(reader, peer) {
		delete(m.late, reader+"|"+directConv(reader, peer)) // a read at or above the cursor recounts
	}
	c := cursorCmd{Reader: reader, Peer: peer, Group: gid, UpTo: upTo}
	if _, err := m.e.prop.Propose(context.Background(), wire.CmdReadCursor, c.encode()); err != nil {
		m.t.Fatalf("cursor: %v", err)
	}
}

func (m *unreadModel) readUpTo(reader, peer string) snowflake.ID {
	m.t.Helper()
	cur, err := m.e.svc.ReadUpTo(reader, peer, "")
	if err != nil {
		m.t.Fatal(err)
	}
	return cur
}

// counted is the unread count of uid in conv counted on the history.
func counted(t testing.TB, db *badger.DB, uid, conv string) int {
	t.Helper()
	n := 0
	err := db.View(func(tx *badger.Txn) error {
		cur, _, err := getCursor(tx, cursorKey(uid, conv))
		if err != nil {
			return err
		}
		prefix := convPrefix(conv)
		it := tx.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		for it.Seek(prefix); it.ValidForPrefix(prefix); it.Next() {
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			from, _, _, _ := readBody(conv, 0, v, false)
			if tail8(it.Item().Key()) > uint64(cur) && string(from) != uid {
				n++
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return min(n, unreadCap)
}

// check compares every user's conversation list and UnreadTotal with the
// counts on the history.
func (m *unreadModel) check(step string) {
	m.t.Helper()
	for _, uid := range m.users {
		convs, _, err := m.e.svc.conversations(context.Background(), uid, conversationsMax)
		if err != nil {
			m.t.Fatal(err)
		}
		total := 0
		for _, c := range convs {
			conv := groupConv(c.Group)
			if c.Group == "" {
				conv = directConv(uid, c.Peer)
			}
			if want := min(counted(m.t, m.e.db, uid, conv)+m.late[uid+"|"+conv], unreadCap); c.Unread != want {
				m.t.Fatalf("%s: %s's unread in %s = %d, counted %d", step, uid, conv, c.Unread, want)
			}
			top, _, err := m.e.svc.historyPage(context.Background(), conv, nil, 1)
			if err != nil || len(top) != 1 || !bytes.Equal(top[0], c.Last) {
				m.t.Fatalf("%s: %s's last message in %s = %s, history has %q (%v)", step, uid, conv, c.Last, top, err)
			}
			total += c.Unread
		}
		if got, err := m.e.svc.UnreadTotal(uid); err != nil || got != total {
			m.t.Fatalf("%s: UnreadTotal(%s) = %d %v, want %d", step, uid, got, err, total)
		}
	}
}

// randomOps runs n random messages and cursor moves, checking the counts
// after each. Direct message IDs sometimes go backwards (a node with a
// slow clock), at times below the recipient's cursor; group IDs do not
// (see TestGroupLateMessageCountsAsUnread).
func (m *unreadModel) randomOps(rng *rand.Rand, n int) {
	m.t.Helper()
	for i := range n {
		a, b := m.users[rng.IntN(3)], m.users[rng.IntN(3)]
		switch r := rng.IntN(10); {
		case r < 4:
			id := m.nextID
			if k := rng.IntN(10); k < 2 {
				id -= snowflake.ID(rng.IntN(50) + 1) // out of order
			} else if cur := m.readUpTo(b, a); k == 2 && cur > 0 {
				id = cur - snowflake.ID(rng.IntN(10)) // late, at or below b's cursor
			} else {
				m.nextID += 7
			}
			m.message(a, b, "", id)
		case r < 7:
			m.nextID += 7
			m.message(a, "", m.group, m.nextID)
		case r < 9:
			m.cursor(a, b, "", m.nextID-snowflake.ID(rng.IntN(200)))
		default:
			m.cursor(a, "", m.group, m.nextID-snowflake.ID(rng.IntN(200)))
		}
		m.check(fmt.Sprint("op ", i))
	}
}

func TestUnreadKeptMatchesCounted(t *testing.T) {
	for seed := range uint64(4) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			m := newUnreadModel(t)
			m.randomOps(rand.New(rand.NewPCG(seed, 10)), 150)
		})
	}
}

// The counts are state like any other: a follower applying the same log
// gets the same keys, and a snapshot carries them.
func TestUnreadKeptReplicatesAndRestores(t *testing.T) {
	m := newUnreadModel(t)
	follower := m.e.prop.NewFollower(t)
	if _, err := New(Deps{DB: follower.DB(), Proposer: m.e.prop, FSM: follower, Publisher: &fakePub{}, IDs: &seqIDs{}, Users: fakeDir{}}); err != nil {
		t.Fatal(err)
	}
	m.randomOps(rand.New(rand.NewPCG(7, 7)), 80)
	want := dump(t, m.e.db)
	if got := dump(t, follower.DB()); !maps.Equal(want, got) {
		t.Fatal("a follower applying the same log has a different state")
	}
	e2 := newEnv(t, withGroups())
	e2.groups.add(m.group, m.users...)
	fsmtest.Restore(t, e2.f, fsmtest.Snapshot(t, m.e.f))
	for _, uid := range m.users {
		c1, _, _ := m.e.svc.conversations(context.Background(), uid, 100)
		c2, _, _ := e2.svc.conversations(context.Background(), uid, 100)
		if !slices.EqualFunc(c1, c2, func(a, b conversation) bool {
			return a.Peer == b.Peer && a.Group == b.Group && a.Unread == b.Unread && bytes.Equal(a.Last, b.Last)
		}) {
			t.Fatalf("%s: restored %+v, want %+v", uid, c2, c1)
		}
	}
	// The restored node goes on counting.
	e2.prop.SetIndex(m.e.prop.Index())
	m.e = e2
	m.randomOps(rand.New(rand.NewPCG(8, 8)), 30)
}

// A direct message writes six keys (eight for the first of a
// conversation); the sender's own messages never
// count, messages stored below the recipient's cursor (an ID from a slow
// clock) do until the next read at or above it, and a cursor move
// recounts what lies above it.
func TestDirectUnreadKept(t *testing.T) {
	m := newUnreadModel(t)
	before := dump(t, m.e.db)
	m.message("alice", "bob", "", 100)
	first := dump(t, m.e.db)
	if n := len(first) - len(before); n != 8 {
		t.Fatalf("the first direct message wrote %d keys, want 8", n)
	}
	m.message("alice", "bob", "", 110)
	// The message in its history entry, two sync entries and the dedupe
	// entry are new; the summary (x/) and top are rewritten; v/ is not.
	second := dump(t, m.e.db)
	if n := len(second) - len(first); n != 4 {
		t.Fatalf("the second direct message added %d keys, want 4", n)
	}
	for k, v := range first {
		if strings.HasPrefix(k, keyRoot+"x/") && second[k] == v {
			t.Fatalf("summary %s was not rewritten", k)
		}
		if strings.HasPrefix(k, keyRoot+"v/") && second[k] != v {
			t.Fatalf("index entry %s was rewritten", k)
		}
	}
	m.message("bob", "alice", "", 120)
	m.message("alice", "bob", "", 130)
	m.message("bob", "bob", "", 140) // to oneself: never unread
	unreadOf := func(uid, peer string) int {
		t.Helper()
		var sum summary
		if err := m.e.db.View(func(tx *badger.Txn) error {
			var err error
			sum, _, err = directSide(tx, uid, peer)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if !sum.Kept {
			t.Fatalf("summary %s/%s is not kept", uid, peer)
		}
		return int(sum.Unread)
	}
	if a, b, self := unreadOf("alice", "bob"), unreadOf("bob", "alice"), unreadOf("bob", "bob"); a != 1 || b != 3 || self != 0 {
		t.Fatalf("unread alice %d bob %d self %d, want 1 3 0", a, b, self)
	}
	m.cursor("bob", "alice", "", 115)
	if n := unreadOf("bob", "alice"); n != 1 {
		t.Fatalf("after reading up to 115: %d, want 1 (130)", n)
	}
	m.message("alice", "bob", "", 112) // below the cursor: late, not read
	if n := unreadOf("bob", "alice"); n != 2 {
		t.Fatalf("a message stored below the cursor: %d unread, want 2", n)
	}
	m.message("alice", "bob", "", 125) // out of order but above the cursor
	if n := unreadOf("bob", "alice"); n != 3 {
		t.Fatalf("an out-of-order message above the cursor: %d, want 3", n)
	}
	m.check("direct")
	m.cursor("bob", "alice", "", 110) // behind the cursor: nothing changes
	if n := unreadOf("bob", "alice"); n != 3 {
		t.Fatalf("after a read behind the cursor: %d, want 3", n)
	}
	m.cursor("bob", "alice", "", 115) // at the cursor again: recounted
	if n := unreadOf("bob", "alice"); n != 2 {
		t.Fatalf("after a read at the cursor: %d, want 2 (125, 130)", n)
	}
	m.check("direct, read again")
}

// Group counts: the group summary counts messages, each sender's record
// counts their own, and a cursor move fixes what the member has read.
func TestGroupUnreadKept(t *testing.T) {
	m := newUnreadModel(t)
	m.message("alice", "", "team", 100)
	m.message("bob", "", "team", 110)
	m.message("alice", "", "team", 120)
	unreadOf := func(uid string) int {
		t.Helper()
		var n int
		var ok bool
		if err := m.e.db.View(func(tx *badger.Txn) error {
			sum, _, err := getSummary(tx, groupSummaryKey("team"))
			if err != nil {
				return err
			}
			rec, found, err := getMemberCursor(tx, cursorKey(uid, groupConv("team")))
			n, ok = rec.unread(sum, found)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if !ok {
			t.Fatalf("%s's group unread is not kept", uid)
		}
		return n
	}
	if a, b, c := unreadOf("alice"), unreadOf("bob"), unreadOf("carol"); a != 1 || b != 2 || c != 3 {
		t.Fatalf("unread alice %d bob %d carol %d, want 1 2 3", a, b, c)
	}
	m.cursor("carol", "", "team", 105)
	m.cursor("bob", "", "team", 999) // clamped to 120
	if b, c := unreadOf("bob"), unreadOf("carol"); b != 0 || c != 2 {
		t.Fatalf("after cursors: bob %d carol %d, want 0 2", b, c)
	}
	m.message("bob", "", "team", 130)
	m.message("carol", "", "team", 140)
	if a, b, c := unreadOf("alice"), unreadOf("bob"), unreadOf("carol"); a != 3 || b != 1 || c != 3 {
		t.Fatalf("unread alice %d bob %d carol %d, want 3 1 3", a, b, c)
	}
	m.check("group")
}

// A group message stored after a member's cursor moved, with an ID below
// the cursor (a node with a slow clock), counts as unread for that member
// until the cursor moves again: a group message writes no per-member key,
// so it cannot be compared with each member's cursor. (For a direct
// conversation it is compared: see TestDirectUnreadKept.)
func TestGroupLateMessageCountsAsUnread(t *testing.T) {
	m := newUnreadModel(t)
	m.message("alice", "", "team", 100)
	m.message("alice", "", "team", 120)
	m.cursor("bob", "", "team", 120)
	m.message("alice", "", "team", 110)
	convs, _, err := m.e.svc.conversations(context.Background(), "bob", 10)
	if err != nil || len(convs) != 1 || convs[0].Unread != 1 {
		t.Fatalf("bob: %+v %v, want 1 unread", convs, err)
	}
	m.message("alice", "", "team", 130)
	m.cursor("bob", "", "team", 130)
	convs, _, _ = m.e.svc.conversations(context.Background(), "bob", 10)
	if convs[0].Unread != 0 {
		t.Fatalf("after reading: %d unread", convs[0].Unread)
	}
}

// A late group message (an ID below the reader's cursor: its node's
// clock was behind, or it took its ID before one that committed first)
// counts as unread until the reader reads at the cursor again. Before,
// the cursor was already at the group's newest message, so that read
// was a no-op: the message stayed unread until someone wrote again. A
// stale read below the cursor (another device's) changes nothing.
func TestGroupLateMessageIsClearedByAReadAtTheCursor(t *testing.T) {
	e := newEnv(t, withGroups())
	e.groups.add("team", "alice", "bob", "carol")
	srv := e.server(t)
	unread := func(uid string) int {
		t.Helper()
		var l convList
		if r := get(t, srv, uid, "/chat/conversations", &l); r.Status != http.StatusOK || len(l.Conversations) != 1 {
			t.Fatalf("conversations of %s: %d %s", uid, r.Status, r.Body)
		}
		return l.Conversations[0].Unread
	}
	read := func(uid string, upTo snowflake.ID) {
		t.Helper()
		r := do(t, srv, uid, http.MethodPost, "/chat/read", "application/json", []byte(`{"group":"team","upTo":"`+upTo.String()+`"}`))
		if r.Status != http.StatusNoContent {
			t.Fatalf("read: %d %s", r.Status, r.Body)
		}
	}
	setNext := func(id snowflake.ID) {
		e.ids.mu.Lock()
		e.ids.next = int64(id)
		e.ids.mu.Unlock()
	}
	first := e.sendGroup(t, "alice", "team", "m1")
	setNext(first.ID + 10)
	top := e.sendGroup(t, "alice", "team", "m3")
	read("bob", top.ID)
	if n := unread("bob"); n != 0 {
		t.Fatalf("after reading the newest: %d unread", n)
	}
	// carol's message took its ID before alice's and commits after it.
	setNext(first.ID + 5)
	if late := e.sendGroup(t, "carol", "team", "m2"); late.ID >= top.ID {
		t.Fatalf("test is void: late message %v not below %v", late.ID, top.ID)
	}
	if n := unread("bob"); n != 1 {
		t.Fatalf("with the late message: %d unread, want 1", n)
	}
	read("bob", first.ID) // another device's stale read
	if n := unread("bob"); n != 1 {
		t.Fatalf("after a stale read: %d unread, want 1", n)
	}
	read("bob", top.ID) // the newest message, read again
	if n := unread("bob"); n != 0 {
		t.Fatalf("after reading the newest message again: %d unread, want 0", n)
	}
	if cur, err := e.svc.ReadUpTo("bob", "", "team"); err != nil || cur != top.ID {
		t.Fatalf("bob's cursor = %v, %v; want %v", cur, err, top.ID)
	}
}

// legacyWriter writes the keys the archive wrote before counts were kept
// (16-byte summaries, 8-byte cursors, the i/ index), as a node that ran
// the earlier version left its database.
type legacyWriter struct {
	t   *testing.T
	db  *badger.DB
	seq uint64
	n   int
	ids *unreadModel // hands out unique IDs
}

func (w *legacyWriter) set(tx *badger.Txn, k, v []byte) {
	if err := tx.Set(k, v); err != nil {
		w.t.Fatal(err)
	}
}

func legacySummary(tx *badger.Txn, key []byte, id snowflake.ID, seq uint64) []byte {
	old, found, _ := getSummary(tx, key)
	top := id
	if found && old.LastID > top {
		top = old.LastID
	}
	return summary{LastID: top, LastSeq: seq}.appendHead(nil)
}

func (w *legacyWriter) message(from, to, gid string, id snowflake.ID) {
	w.t.Helper()
	w.seq++
	w.n++
	id = w.ids.fresh(id)
	env := text(fmt.Sprint("legacy", w.n), "x")
	env.ID, env.From, env.To, env.Group = id, from, to, gid
	idb := be64(uint64(id))
	err := w.db.Update(func(tx *badger.Txn) error {
		w.set(tx, msgKey(id), env.Marshal())
		w.set(tx, dedupKey(from, env.CID), idb)
		if gid != "" {
			w.set(tx, withID(convPrefix(groupConv(gid)), uint64(id)), []byte(from))
			w.set(tx, withID(groupSyncPrefix(gid), w.seq), idb)
			w.set(tx, groupSummaryKey(gid), legacySummary(tx, groupSummaryKey(gid), id, w.seq))
			return nil
		}
		w.set(tx, withID(convPrefix(directConv(from, to)), uint64(id)), []byte(from))
		for _, p := range [][2]string{{from, to}, {to, from}} {
			w.set(tx, withID(syncPrefix(p[0]), w.seq), idb)
			w.set(tx, summaryKey(p[0], p[1]), legacySummary(tx, summaryKey(p[0], p[1]), id, w.seq))
		}
		if from != to {
			w.set(tx, withID(inboxPrefix(to, from), uint64(id)), nil)
		}
		return nil
	})
	if err != nil {
		w.t.Fatal(err)
	}
}

func (w *legacyWriter) cursor(reader, peer, gid string, upTo snowflake.ID) {
	w.t.Helper()
	conv := groupConv(gid)
	if gid == "" {
		conv = directConv(reader, peer)
	}
	err := w.db.Update(func(tx *badger.Txn) error {
		top, err := lastIndexed(tx, convPrefix(conv))
		if err != nil {
			return err
		}
		upTo = min(upTo, snowflake.ID(top))
		cur, _, err := getCursor(tx, cursorKey(reader, conv))
		if err != nil || upTo <= cur {
			return err
		}
		w.set(tx, cursorKey(reader, conv), be64(uint64(upTo)))
		return nil
	})
	if err != nil {
		w.t.Fatal(err)
	}
}

// Data written before counts were kept reads the same, and the FSM goes
// on from it: summaries and cursors in the old forms are counted as
// before and rewritten in the new forms when touched.
func TestUnreadFromLegacyData(t *testing.T) {
	for seed := range uint64(4) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			m := newUnreadModel(t)
			rng := rand.New(rand.NewPCG(seed, 99))
			w := &legacyWriter{t: t, db: m.e.db, ids: m}
			for range 120 {
				a, b := m.users[rng.IntN(3)], m.users[rng.IntN(3)]
				switch r := rng.IntN(10); {
				case r < 4:
					m.nextID += 7
					w.message(a, b, "", m.nextID-snowflake.ID(rng.IntN(20)))
				case r < 7:
					m.nextID += 7
					w.message(a, "", m.group, m.nextID)
				case r < 9:
					w.cursor(a, b, "", m.nextID-snowflake.ID(rng.IntN(100)))
				default:
					w.cursor(a, "", m.group, m.nextID-snowflake.ID(rng.IntN(100)))
				}
			}
			m.check("legacy data")
			legacy := dump(t, m.e.db)
			m.e.prop.SetIndex(1 << 10) // positions after the legacy ones
			m.randomOps(rng, 100)
			// Legacy i/ keys are left alone, and no new one is written.
			for k := range dump(t, m.e.db) {
				if bytes.HasPrefix([]byte(k), []byte(keyRoot+"i/")) {
					if _, ok := legacy[k]; !ok {
						t.Fatalf("new i/ key %q", k)
					}
				}
			}
		})
	}
}

// A legacy group with more than the cap of messages above a member's
// cursor: the list falls back to counting (capped), and after the FSM has
// started counting the group the kept count saturates at the cap too.
func TestLegacyGroupUnreadCapped(t *testing.T) {
	m := newUnreadModel(t)
	w := &legacyWriter{t: t, db: m.e.db, ids: m}
	for i := range unreadCap + 20 {
		w.message("alice", "", "team", snowflake.ID(1000+i))
	}
	w.cursor("bob", "", "team", 1005)
	m.check("legacy")
	m.e.prop.SetIndex(1 << 10)
	m.message("bob", "", "team", 5000)
	m.message("alice", "", "team", 5001)
	m.check("counting started")
	m.cursor("bob", "", "team", 1010)
	m.check("bob read a little")
	m.cursor("carol", "", "team", 4000)
	m.message("alice", "", "team", 5002)
	m.check("carol read most")
}

// Many commands in one Raft entry, with cursor moves between messages
// and entries big enough that the FSM splits them (ErrTxnTooBig): the
// kept counts, served partly from the FSM's summary cache, still match
// the history, and a follower whose larger transactions split the
// entries elsewhere (or not at all) ends with the same keys.
func TestUnreadKeptInBatchedEntries(t *testing.T) {
	// 1 MiB memtables: Badger refuses transactions above ~150 KiB or
	// ~1,600 writes, so entries of a few hundred messages are split.
	m := newUnreadModel(t, withMemTable(1<<20))
	// Many conversations, so that counts stay under the cap (a count
	// bumped twice must show).
	m.users = nil
	for i := range 40 {
		m.users = append(m.users, fmt.Sprintf("u%02d", i))
	}
	follower := m.e.prop.NewFollower(t)
	if _, err := New(Deps{DB: follower.DB(), Proposer: m.e.prop, FSM: follower, Publisher: &fakePub{}, IDs: &seqIDs{}, Users: fakeDir{}}); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(7, 7))
	big := strings.Repeat("y", 900) // stays in the LSM tree (values over 1 KiB go to the value log and hardly count)
	for round := range 6 {
		var cmds []fsm.Command
		for range 300 + rng.IntN(300) {
			a, b := m.users[rng.IntN(len(m.users))], m.users[rng.IntN(len(m.users))]
			switch r := rng.IntN(10); {
			case r < 7:
				m.nextID += 7
				m.n++
				id := m.fresh(m.nextID)
				env := text(fmt.Sprint("m", m.n), "x")
				if rng.IntN(2) == 0 {
					env.Body = big
				}
				env.ID, env.From, env.To = id, a, b
				c := msgCmd{ID: id, From: a, To: b, CID: env.CID, Payload: env.Marshal()}
				cmds = append(cmds, fsm.Command{Type: wire.CmdMessage, Payload: c.encode()})
			default:
				c := cursorCmd{Reader: a, Peer: b, UpTo: m.nextID - snowflake.ID(rng.IntN(300))}
				cmds = append(cmds, fsm.Command{Type: wire.CmdReadCursor, Payload: c.encode()})
			}
		}
		res, err := m.e.prop.ProposeBatch(context.Background(), cmds)
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range res {
			if r.Err != nil {
				t.Fatalf("round %d command %d: %v", round, i, r.Err)
			}
		}
		m.check(fmt.Sprint("round ", round))
	}
	if got, want := fsmtest.Dump(t, follower.DB(), keyRoot), fsmtest.Dump(t, m.e.db, keyRoot); !maps.Equal(got, want) {
		t.Fatalf("the follower's archive differs from the leader's (%d keys vs %d)", len(got), len(want))
	}
}
