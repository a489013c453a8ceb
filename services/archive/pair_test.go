package archive

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/dgraph-io/badger/v4"
)

// toPerSideSummaries rewrites the state into the form of the version
// before x/: each direct conversation's summary as one w/ key per side
// (the 32-byte kept form), no x/.
func toPerSideSummaries(t *testing.T, db *badger.DB) int {
	t.Helper()
	n := 0
	err := db.Update(func(tx *badger.Txn) error {
		prefix := []byte(keyRoot + "x/")
		it := tx.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: true})
		var keys, vals [][]byte
		for it.Seek(prefix); it.ValidForPrefix(prefix); it.Next() {
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				it.Close()
				return err
			}
			keys, vals = append(keys, it.Item().KeyCopy(nil)), append(vals, v)
		}
		it.Close()
		for i, k := range keys {
			p, ok := decodePair(vals[i])
			if !ok {
				return fmt.Errorf("bad x/ value under %q", k)
			}
			users := strings.Split(strings.TrimPrefix(string(k[len(prefix):]), "d:"), ":")
			for s, uid := range users[:sides(users[0], users[1])] {
				if err := tx.Set(stateKey(uid, users[1-s]), p.side(s).encodeDirect()); err != nil {
					return err
				}
			}
			if err := tx.Delete(k); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// A database written by the version that kept one summary per side (w/)
// reads the same, and the FSM goes on from it, writing x/ for each
// conversation it touches: the counts still match the history.
func TestUnreadFromPerSideSummaries(t *testing.T) {
	for seed := range uint64(4) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			m := newUnreadModel(t)
			rng := rand.New(rand.NewPCG(seed, 42))
			m.randomOps(rng, 60)
			lists := map[string][]conversation{}
			for _, uid := range m.users {
				lists[uid], _, _ = m.e.svc.conversations(context.Background(), uid, conversationsMax)
			}
			if toPerSideSummaries(t, m.e.db) == 0 {
				t.Fatal("no direct conversation to rewrite")
			}
			// What the FSM keeps in memory came from the x/ keys just removed.
			m.e.svc.st.purge()
			for _, uid := range m.users {
				got, _, _ := m.e.svc.conversations(context.Background(), uid, conversationsMax)
				if !slices.EqualFunc(got, lists[uid], func(a, b conversation) bool {
					return a.Peer == b.Peer && a.Group == b.Group && a.Unread == b.Unread && bytes.Equal(a.Last, b.Last)
				}) {
					t.Fatalf("%s's list from per-side summaries: %+v, want %+v", uid, got, lists[uid])
				}
			}
			m.check("per-side summaries")
			m.randomOps(rng, 80)
		})
	}
}

// The self conversation and the side order: each user reads their own
// side of the one key.
func TestPairSides(t *testing.T) {
	m := newUnreadModel(t)
	m.message("carol", "alice", "", 100) // alice is side 0 of d:alice:carol
	m.message("carol", "alice", "", 101)
	m.message("alice", "carol", "", 102)
	m.message("bob", "bob", "", 103)
	m.cursor("alice", "carol", "", 100)
	err := m.e.db.View(func(tx *badger.Txn) error {
		p, found, err := getPair(tx, directConv("carol", "alice"))
		if err != nil || !found {
			return fmt.Errorf("x/ of alice and carol: found %v, %v", found, err)
		}
		if p.LastID != 102 || p.Unread != [2]uint64{1, 1} || p.Cursor[0] != 100 || p.Cursor[1] != 0 {
			return fmt.Errorf("pair %+v, want last 102, unread alice 1 (101) and carol 1 (102), alice's cursor 100", p)
		}
		self, _, err := directSide(tx, "bob", "bob")
		if err != nil || self.LastID != 103 || self.Unread != 0 {
			return fmt.Errorf("bob's own conversation %+v, %v", self, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	m.check("sides")
}

// The handler builds its keys in one buffer (keyBuf); readers use the
// helpers of keys.go. They must be the same bytes.
func TestKeyBufMatchesHelpers(t *testing.T) {
	kb := newKeyBuf(8) // small: the buffer grows while slices are live
	conv := directConv("bob", "alice")
	got := [][]byte{
		kb.key("dedup/", "alice", "/", "c-1"),
		kb.keyN(77, "m/"),
		kb.keyN(78, "c/", conv, "/"),
		kb.keyN(79, "s/", "alice", "/"),
		kb.key("x/", conv),
		kb.key("v/", "alice", "/", "bob"),
		kb.u64(80),
		kb.bytes("alice"),
		kb.key("gv/", "team"),
		kb.key("rc/", "alice", "/g:", "team"),
		kb.keyN(81, "c/g:", "team", "/"),
		kb.keyN(82, "gs/", "team", "/"),
	}
	want := [][]byte{
		dedupKey("alice", "c-1"),
		msgKey(77),
		withID(convPrefix(conv), 78),
		withID(syncPrefix("alice"), 79),
		pairKey(conv),
		summaryKey("alice", "bob"),
		be64(80),
		[]byte("alice"),
		groupSummaryKey("team"),
		cursorKey("alice", groupConv("team")),
		withID(convPrefix(groupConv("team")), 81),
		withID(groupSyncPrefix("team"), 82),
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Errorf("key %d = %q, want %q", i, got[i], want[i])
		}
	}
}
