package archive

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/internal/snowflake"
	"github.com/edgechat/edgechat/internal/wire"
)

// hourIDs hands out one ID per hour of message time from start.
func hourIDs(start time.Time) *seqIDs {
	ms := start.Sub(snowflake.Epoch).Milliseconds()
	return &seqIDs{next: int64(snowflake.Make(uint64(ms), 1, 0)), step: int64(snowflake.Make(3600*1000, 0, 0))}
}

// idsOf lists the IDs of envelopes.
func idsOf(t *testing.T, msgs [][]byte) []snowflake.ID {
	t.Helper()
	var out []snowflake.ID
	for _, m := range msgs {
		var id wireID
		if err := id.from(m); err != nil {
			t.Fatal(err)
		}
		out = append(out, snowflake.ID(id))
	}
	return out
}

// Retention deletes what is older than the cutoff from both tiers, with
// the server's retention for direct conversations and a group's shorter
// one for the group: history and sync keep exactly the newer messages,
// the straddling segment is rewritten without the expired ones, segments
// wholly below the cutoff go (their objects with the orphans), a
// conversation whose messages all expired leaves the conversation list,
// unread counts drop by the expired unread messages (hot and sealed),
// the expired messages' dedupe keys go, and a retried cid of an expired
// message is stored as a new message.
func TestRetentionDeletesInBothTiers(t *testing.T) {
	for _, shared := range []bool{false, true} {
		t.Run(fmt.Sprintf("shared=%v", shared), func(t *testing.T) {
			start := time.Now().Add(-200 * time.Hour).Truncate(time.Hour)
			ids := hourIDs(start)
			segs, dir := localSegments(t, shared)
			e := newEnv(t, withGroups(), withIDs(ids), withSegments(segs))
			e.groups.add("room", "alice", "bob")
			first := e.send(t, "alice", "carol", "old") // hour 0: alice and carol never talk again
			var all []wire.Envelope
			for i := range 150 { // hours 1..150, alternating direct and group
				if i%2 == 0 {
					all = append(all, e.send(t, "alice", "bob", fmt.Sprintf("d%d", i)))
				} else {
					all = append(all, e.sendGroup(t, "bob", "room", fmt.Sprintf("g%d", i)))
				}
			}
			ctx := context.Background()
			// Seal most of it (everything older than 40 hours), in small segments.
			if _, err := e.svc.SealOnce(ctx, SealConfig{HotAge: 40 * time.Hour, MaxMessages: 7}, start.Add(151*time.Hour)); err != nil {
				t.Fatal(err)
			}
			before, err := e.svc.Status()
			if err != nil || before.SealedSegments < 10 {
				t.Fatalf("sealed %+v %v", before, err)
			}
			unreadBefore := e.unreadOf(t, "bob", "alice")

			now := start.Add(151 * time.Hour)
			policy := RetentionPolicy{Days: 4, GroupDays: func(gid string) int {
				if gid == "room" {
					return 3
				}
				return 0
			}, StraddlerLag: -1} // rewritten at once (the lag: TestRetentionRewritesAStraddlerOncePerLag)
			st, err := e.svc.ExpireOnce(ctx, policy, now)
			if err != nil {
				t.Fatal(err)
			}
			if st.Rewritten == 0 || st.Segments == 0 || st.Hot == 0 {
				t.Fatalf("expired %+v: want hot messages, whole segments and a rewritten one", st)
			}
			directCut := policy.cutoffFor(directConv("alice", "bob"), now)
			groupCut := policy.cutoffFor(groupConv("room"), now)
			var wantDirect, wantGroup []snowflake.ID
			for i := len(all) - 1; i >= 0; i-- {
				m := all[i]
				switch {
				case m.Group == "" && m.ID >= directCut:
					wantDirect = append(wantDirect, m.ID)
				case m.Group != "" && m.ID >= groupCut:
					wantGroup = append(wantGroup, m.ID)
				}
			}
			for conv, want := range map[string][]snowflake.ID{directConv("alice", "bob"): wantDirect, groupConv("room"): wantGroup} {
				msgs, more, err := e.svc.historyPage(ctx, conv, nil, 200)
				if err != nil || more {
					t.Fatalf("history %s: more=%v %v", conv, more, err)
				}
				if got := idsOf(t, msgs); fmt.Sprint(got) != fmt.Sprint(want) {
					t.Fatalf("history %s after retention:\n got %v\nwant %v", conv, got, want)
				}
			}
			synced, _, more, err := e.svc.syncPage(ctx, "bob", 0, 1000)
			if err != nil || more || len(synced) != len(wantDirect)+len(wantGroup) {
				t.Fatalf("bob's sync: %d messages (want %d), more=%v, %v", len(synced), len(wantDirect)+len(wantGroup), more, err)
			}
			kept := map[snowflake.ID]bool{}
			for _, id := range append(wantDirect, wantGroup...) {
				kept[id] = true
			}
			for _, id := range idsOf(t, synced) {
				if !kept[id] {
					t.Fatalf("sync returned expired message %d", id)
				}
			}
			convs, _, err := e.svc.conversations(ctx, "alice", 100)
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range convs {
				if c.Peer == "carol" {
					t.Fatal("a conversation whose messages all expired is still listed")
				}
			}
			// Bob read nothing: what is left of alice's messages is unread,
			// the expired ones (hot and sealed) are not.
			if u := e.unreadOf(t, "bob", "alice"); u != len(wantDirect) || unreadBefore != len(all)/2 {
				t.Fatalf("bob's unread count from alice: %d, want %d (before %d)", u, len(wantDirect), unreadBefore)
			}
			// The expired messages' dedupe keys are gone, the others' stay.
			if a, b := countKeys(t, e, dedupPrefixOf("alice")), countKeys(t, e, dedupPrefixOf("bob")); a != len(wantDirect) || b != len(wantGroup) {
				t.Fatalf("dedupe keys: alice %d (want %d), bob %d (want %d)", a, len(wantDirect), b, len(wantGroup))
			}
			if st.Dedup != 1+len(all)-len(wantDirect)-len(wantGroup) {
				t.Fatalf("%d dedupe keys deleted, want %d", st.Dedup, 1+len(all)-len(wantDirect)-len(wantGroup))
			}
			// A retry of the expired first message's cid is a new message.
			stored, _, dup, err := e.svc.SendDirect(ctx, "alice", "carol", text("old", "again"))
			if err != nil || dup || stored.ID <= first.ID {
				t.Fatalf("retry of an expired message: %+v dup=%v %v", stored, dup, err)
			}
			// The replaced and dropped objects are orphans; collected, the rest reads.
			// (The grace counts from the first sweep that sees them unreferenced.)
			for _, at := range []time.Time{time.Now().Add(time.Hour), time.Now().Add(time.Hour + time.Second)} {
				if _, err := e.svc.collectOrphans(ctx, SealConfig{OrphanGrace: time.Second}.withDefaults(), at); err != nil {
					t.Fatal(err)
				}
			}
			after, _ := e.svc.Status()
			if n := countFiles(t, dir); n != after.SealedSegments {
				t.Fatalf("%d segment files for %d segments", n, after.SealedSegments)
			}
			if msgs, _, err := e.svc.historyPage(ctx, groupConv("room"), nil, 200); err != nil || len(msgs) != len(wantGroup) {
				t.Fatalf("history after collection: %d %v", len(msgs), err)
			}
			// A second sweep finds nothing more to do.
			if st, err := e.svc.ExpireOnce(ctx, policy, now); err != nil || st.Hot+st.Segments+st.Sync+st.Rewritten != 0 {
				t.Fatalf("second sweep: %+v %v", st, err)
			}
		})
	}
}

// countKeys counts the keys under prefix.
func countKeys(t *testing.T, e *env, prefix []byte) int {
	t.Helper()
	n := 0
	if err := e.db.View(func(tx *badger.Txn) error {
		it := tx.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: false})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			n++
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

func (e *env) unreadOf(t *testing.T, uid, peer string) int {
	t.Helper()
	convs, _, err := e.svc.conversations(context.Background(), uid, 100)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range convs {
		if c.Peer == peer {
			return c.Unread
		}
	}
	return -1
}

// Retention takes the expired unread messages off the direct
// conversation's unread counts, hot ones (CmdRetention) and sealed ones
// (CmdRetentionRefs, exactly once: a repeated command changes nothing).
func TestRetentionAdjustsDirectUnread(t *testing.T) {
	for _, sealed := range []bool{false, true} {
		t.Run(fmt.Sprintf("sealed=%v", sealed), func(t *testing.T) {
			start := time.Now().Add(-100 * time.Hour).Truncate(time.Hour)
			var opts []envOpt
			if sealed {
				segs, _ := localSegments(t, false)
				opts = append(opts, withSegments(segs))
			}
			e := newEnv(t, append(opts, withIDs(hourIDs(start)))...)
			var alices, bobs []wire.Envelope
			for i := range 60 {
				alices = append(alices, e.send(t, "alice", "bob", fmt.Sprintf("a%d", i))) // even hours
				bobs = append(bobs, e.send(t, "bob", "alice", fmt.Sprintf("b%d", i)))
			}
			ctx := context.Background()
			// alice read bob's first 10; bob read nothing.
			if err := e.svc.MarkRead(ctx, "alice", "bob", bobs[9].ID); err != nil {
				t.Fatal(err)
			}
			if a, b := e.unreadOf(t, "alice", "bob"), e.unreadOf(t, "bob", "alice"); a != 50 || b != 60 {
				t.Fatalf("unread before: alice %d bob %d", a, b)
			}
			now := start.Add(121 * time.Hour)
			if sealed { // hours 0..90 sealed: every expired message is
				if st, err := e.svc.SealOnce(ctx, SealConfig{HotAge: 30 * time.Hour, MaxMessages: 16}, now); err != nil || st.Messages != 91 {
					t.Fatalf("sealed %+v %v", st, err)
				}
			}
			st, err := e.svc.ExpireOnce(ctx, RetentionPolicy{Days: 3, StraddlerLag: -1}, now) // the first 49 hours expire
			if err != nil || st.Dedup != 49 || (!sealed && st.Hot != 49) || (sealed && st.Hot != 0) {
				t.Fatalf("expired %+v %v", st, err)
			}
			// Hours 0..48 expired: alice's messages at even hours (25), bob's at odd (24).
			want := func() {
				t.Helper()
				if a, b := e.unreadOf(t, "alice", "bob"), e.unreadOf(t, "bob", "alice"); a != 50-14 || b != 60-25 {
					t.Fatalf("unread after: alice %d (want %d), bob %d (want %d)", a, 50-14, b, 60-25)
				}
			}
			want()
			again := retentionRefsCmd{Conv: directConv("alice", "bob"), Cutoff: alices[25].ID, Refs: []expiringRef{
				{ID: alices[0].ID, Sealed: true, From: "alice", CID: alices[0].CID},
				{ID: bobs[20].ID, Sealed: true, From: "bob", CID: bobs[20].CID},
			}}
			v, err := e.prop.Propose(ctx, wire.CmdRetentionRefs, again.encode())
			if r, _ := v.(*refsApplied); err != nil || r == nil || *r != (refsApplied{}) {
				t.Fatalf("the command again: %+v %v", v, err)
			}
			want()
		})
	}
}

// A malformed retention command is refused and changes nothing.
func TestRetentionCommandRefusals(t *testing.T) {
	e := newEnv(t)
	e.send(t, "alice", "bob", "m1")
	good := (&retentionCmd{Conv: directConv("alice", "bob"), Cutoff: 5}).encode()
	before := dump(t, e.db)
	for name, p := range map[string][]byte{
		"version":   append([]byte{7}, good[1:]...),
		"truncated": good[:len(good)-3],
		"conv":      (&retentionCmd{Conv: "x:y", Cutoff: 5}).encode(),
		"cutoff 0":  (&retentionCmd{Conv: directConv("alice", "bob")}).encode(),
		"trailing":  append(append([]byte(nil), good...), 9),
	} {
		if _, err := e.prop.Propose(context.Background(), wire.CmdRetention, p); !errors.Is(err, ErrBadCommand) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if fmt.Sprint(dump(t, e.db)) != fmt.Sprint(before) {
		t.Fatal("a refused retention command changed the state")
	}
	if got, err := decodeRetentionCmd(good); err != nil || !bytes.Equal(got.encode(), good) {
		t.Fatalf("round trip: %+v %v", got, err)
	}
}

func FuzzDecodeRetentionCmd(f *testing.F) {
	f.Add((&retentionCmd{Conv: "g:room", Cutoff: 5}).encode())
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := decodeRetentionCmd(b)
		if err != nil {
			return
		}
		if again, err := decodeRetentionCmd(c.encode()); err != nil || again.Conv != c.Conv || again.Cutoff != c.Cutoff {
			t.Fatalf("re-encoding %+v: %+v %v", c, again, err)
		}
	})
}

// A malformed CmdRetentionRefs is refused and changes nothing.
func TestRetentionRefsRefusals(t *testing.T) {
	e := newEnv(t)
	m := e.send(t, "alice", "bob", "m1")
	conv := directConv("alice", "bob")
	ok := retentionRefsCmd{Conv: conv, Cutoff: m.ID + 1, Refs: []expiringRef{{ID: m.ID, From: "alice", CID: m.CID}}}
	good := ok.encode()
	before := dump(t, e.db)
	over := retentionRefsCmd{Conv: conv, Cutoff: m.ID + 1, Refs: make([]expiringRef, refsBatch+1)}
	for i := range over.Refs {
		over.Refs[i] = expiringRef{ID: 1, From: "alice", CID: "c"}
	}
	for name, p := range map[string][]byte{
		"version":       append([]byte{7}, good[1:]...),
		"truncated":     good[:len(good)-2],
		"trailing":      append(append([]byte(nil), good...), 0),
		"conv":          (&retentionRefsCmd{Conv: "x:y", Cutoff: 5}).encode(),
		"cutoff 0":      (&retentionRefsCmd{Conv: conv}).encode(),
		"not expired":   (&retentionRefsCmd{Conv: conv, Cutoff: m.ID, Refs: []expiringRef{{ID: m.ID, From: "alice", CID: m.CID}}}).encode(),
		"bad sender":    (&retentionRefsCmd{Conv: conv, Cutoff: m.ID + 1, Refs: []expiringRef{{ID: m.ID, From: "al/ice", CID: m.CID}}}).encode(),
		"no cid":        (&retentionRefsCmd{Conv: conv, Cutoff: m.ID + 1, Refs: []expiringRef{{ID: m.ID, From: "alice"}}}).encode(),
		"too many refs": over.encode(),
	} {
		if _, err := e.prop.Propose(context.Background(), wire.CmdRetentionRefs, p); !errors.Is(err, ErrBadCommand) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if fmt.Sprint(dump(t, e.db)) != fmt.Sprint(before) {
		t.Fatal("a refused command changed the state")
	}
	if got, err := decodeRetentionRefsCmd(good); err != nil || !bytes.Equal(got.encode(), good) {
		t.Fatalf("round trip: %+v %v", got, err)
	}
}

func FuzzDecodeRetentionRefsCmd(f *testing.F) {
	f.Add((&retentionRefsCmd{Conv: "g:room", Cutoff: 5, Refs: []expiringRef{{ID: 1, Sealed: true, From: "a", CID: "c"}}}).encode())
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := decodeRetentionRefsCmd(b)
		if err != nil {
			return
		}
		if again, err := decodeRetentionRefsCmd(c.encode()); err != nil || fmt.Sprint(again) != fmt.Sprint(c) {
			t.Fatalf("re-encoding %+v: %+v %v", c, again, err)
		}
	})
}

// groupUnreadOf is uid's unread count of group gid (-1: not listed).
func (e *env) groupUnreadOf(t *testing.T, uid, gid string) int {
	t.Helper()
	convs, _, err := e.svc.conversations(context.Background(), uid, 100)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range convs {
		if c.Group == gid {
			return c.Unread
		}
	}
	return -1
}

// Retention takes the expired messages above each member's cursor off
// the member's group unread count, hot or sealed, whatever the member's
// cursor (below the cutoff, none at all) and own messages among them;
// a member whose cursor is past the expired messages keeps the count,
// and UnreadTotal agrees.
//
// bounded: the sweeper reads 5 expiring messages per conversation and
// sweep (whole segments: at least one), so it takes several sweeps, each
// expiring a prefix, to the same end.
func TestRetentionAdjustsGroupUnread(t *testing.T) {
	for _, tc := range []struct{ sealed, bounded bool }{{false, false}, {true, false}, {false, true}, {true, true}} {
		sealed := tc.sealed
		t.Run(fmt.Sprintf("sealed=%v,bounded=%v", tc.sealed, tc.bounded), func(t *testing.T) {
			start := time.Now().Add(-100 * time.Hour).Truncate(time.Hour)
			opts := []envOpt{withGroups(), withIDs(hourIDs(start))}
			if sealed {
				segs, _ := localSegments(t, false)
				opts = append(opts, withSegments(segs))
			}
			e := newEnv(t, opts...)
			if tc.bounded {
				e.svc.expireReadMax = 5
			}
			e.groups.add("room", "alice", "bob", "carol", "dave", "erin")
			var msgs []wire.Envelope
			for i := range 60 { // hour i: alice at even hours, bob at odd ones
				from := "alice"
				if i%2 == 1 {
					from = "bob"
				}
				msgs = append(msgs, e.sendGroup(t, from, "room", fmt.Sprintf("m%d", i)))
			}
			ctx := context.Background()
			for uid, upTo := range map[string]int{"carol": 9, "alice": 40, "erin": 55} {
				if err := e.svc.MarkGroupRead(ctx, uid, "room", msgs[upTo].ID); err != nil {
					t.Fatal(err)
				}
			}
			// dave never read nor sent; bob sent but never read.
			want := map[string]int{"carol": 50, "alice": 10, "bob": 30, "dave": 60, "erin": 4}
			check := func(when string) {
				t.Helper()
				for uid, n := range want {
					if got := e.groupUnreadOf(t, uid, "room"); got != n {
						t.Errorf("%s: %s's unread %d, want %d", when, uid, got, n)
					}
					if got, err := e.svc.UnreadTotal(uid); err != nil || got != n {
						t.Errorf("%s: %s's unread total %d %v, want %d", when, uid, got, err, n)
					}
				}
			}
			check("before")
			now := start.Add(121 * time.Hour)
			if sealed { // all but the newest sealed: every expired message is
				if st, err := e.svc.SealOnce(ctx, SealConfig{HotAge: 30 * time.Hour, MaxMessages: 16}, now); err != nil || st.Messages != 59 {
					t.Fatalf("sealed %+v %v", st, err)
				}
			}
			// Hours 0..48 expire; 49..59 stay: alice's 50..58 (5), bob's 49..59 (6).
			sweeps, dedup := 0, 0
			for ; sweeps < 100; sweeps++ {
				st, err := e.svc.ExpireOnce(ctx, RetentionPolicy{Days: 3, StraddlerLag: -1}, now)
				if err != nil {
					t.Fatal(err)
				}
				if st.Commands == 0 {
					break
				}
				dedup += st.Dedup
			}
			if dedup != 49 || (tc.bounded && sweeps < 4) || (!tc.bounded && sweeps != 1) {
				t.Fatalf("%d sweeps deleted %d dedupe keys", sweeps, dedup)
			}
			if msgs, _, err := e.svc.historyPage(ctx, groupConv("room"), nil, 200); err != nil || len(msgs) != 11 {
				t.Fatalf("history after retention: %d messages, %v", len(msgs), err)
			}
			want = map[string]int{"carol": 11, "alice": 6, "bob": 5, "dave": 11, "erin": 4}
			check("after")
			// New messages count as before; reading moves the counts as before
			// (to the newest, hot, message: a cursor moved into sealed history
			// counts only the hot messages above it, retention or not).
			e.sendGroup(t, "alice", "room", "new")
			if err := e.svc.MarkGroupRead(ctx, "carol", "room", msgs[59].ID); err != nil {
				t.Fatal(err)
			}
			want = map[string]int{"carol": 1, "alice": 6, "bob": 6, "dave": 12, "erin": 5}
			check("after more")
		})
	}
}

// A retry record retention did not delete (the message expired by a
// retention command alone, as an earlier version did): a retry of its
// cid is still a duplicate, of a message that is gone (no ID).
func TestRetryOfExpiredMessageWithRetryRecordLeft(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	m := e.send(t, "alice", "bob", "m1")
	cmd := retentionCmd{Conv: directConv("alice", "bob"), Cutoff: m.ID + 1}
	if _, err := e.prop.Propose(ctx, wire.CmdRetention, cmd.encode()); err != nil {
		t.Fatal(err)
	}
	if n := countKeys(t, e, dedupPrefixOf("alice")); n != 1 {
		t.Fatalf("%d dedupe keys", n)
	}
	stored, _, dup, err := e.svc.SendDirect(ctx, "alice", "bob", text("m1", "again"))
	if err != nil || !dup || stored.ID != 0 {
		t.Fatalf("retry: %+v dup=%v %v", stored, dup, err)
	}
	if msgs, _, err := e.svc.historyPage(ctx, directConv("alice", "bob"), nil, 10); err != nil || len(msgs) != 0 {
		t.Fatalf("history: %d %v", len(msgs), err)
	}
	// A group message's retry record names the message itself: the
	// duplicate carries its ID.
	e2 := newEnv(t, withGroups())
	e2.groups.add("room", "alice", "bob")
	g := e2.sendGroup(t, "alice", "room", "g1")
	cmd = retentionCmd{Conv: groupConv("room"), Cutoff: g.ID + 1}
	if _, err := e2.prop.Propose(ctx, wire.CmdRetention, cmd.encode()); err != nil {
		t.Fatal(err)
	}
	stored, _, dup, err = e2.svc.SendGroup(ctx, "alice", "room", text("g1", "again"))
	if err != nil || !dup || stored.ID != g.ID {
		t.Fatalf("group retry: %+v dup=%v %v", stored, dup, err)
	}
	if msgs, _, err := e2.svc.historyPage(ctx, groupConv("room"), nil, 10); err != nil || len(msgs) != 0 {
		t.Fatalf("group history: %d %v", len(msgs), err)
	}
}

// A group whose count began after its first message cannot place its
// expired messages in the count: retention leaves every member's count
// as it was (documented), rather than making a sender's own expired
// messages unread to them.
func TestRetentionLeavesLateCountedGroupUnread(t *testing.T) {
	start := time.Now().Add(-100 * time.Hour).Truncate(time.Hour)
	e := newEnv(t, withGroups(), withIDs(hourIDs(start)))
	e.groups.add("room", "alice", "bob", "carol")
	var msgs []wire.Envelope
	for i := range 20 {
		from := "alice"
		if i%2 == 1 {
			from = "bob"
		}
		msgs = append(msgs, e.sendGroup(t, from, "room", fmt.Sprintf("m%d", i)))
	}
	ctx := context.Background()
	if err := e.svc.MarkGroupRead(ctx, "carol", "room", msgs[3].ID); err != nil {
		t.Fatal(err)
	}
	// As a group whose earlier messages were stored before counts were kept.
	if err := e.db.Update(func(tx *badger.Txn) error {
		gk := groupSummaryKey("room")
		sum, _, err := getSummary(tx, gk)
		if err != nil {
			return err
		}
		sum.Complete = false
		return tx.Set(gk, sum.encodeGroup())
	}); err != nil {
		t.Fatal(err)
	}
	before := map[string]int{}
	for _, uid := range []string{"alice", "bob", "carol"} {
		before[uid] = e.groupUnreadOf(t, uid, "room")
	}
	if before["alice"] != 10 || before["bob"] != 10 || before["carol"] != 16 {
		t.Fatalf("before: %v", before)
	}
	if st, err := e.svc.ExpireOnce(ctx, RetentionPolicy{Days: 3}, start.Add(82*time.Hour)); err != nil || st.Hot != 10 {
		t.Fatalf("expired %+v %v", st, err)
	}
	for uid, n := range before {
		if got := e.groupUnreadOf(t, uid, "room"); got != n {
			t.Errorf("%s's unread %d, was %d", uid, got, n)
		}
	}
}

// An expired segment that cannot be read (damaged, or missing) does not
// stop retention: it is dropped with the rest, what its messages
// referred to stays behind (said in the log and in Unreadable), and the
// other expired messages' retry records go.
func TestRetentionDropsUnreadableExpiredSegment(t *testing.T) {
	for _, missing := range []bool{false, true} {
		t.Run(fmt.Sprintf("missing=%v", missing), func(t *testing.T) {
			start := time.Now().Add(-100 * time.Hour).Truncate(time.Hour)
			segs, dir := localSegments(t, false)
			e := newEnv(t, withIDs(hourIDs(start)), withSegments(segs))
			for i := range 60 {
				e.send(t, "alice", "bob", fmt.Sprintf("m%d", i))
			}
			ctx := context.Background()
			now := start.Add(121 * time.Hour)
			if _, err := e.svc.SealOnce(ctx, SealConfig{HotAge: 30 * time.Hour, MaxMessages: 8}, now); err != nil {
				t.Fatal(err)
			}
			files := segmentFiles(t, dir)
			slices.Sort(files)
			oldest := files[0] // messages 0..7
			if missing {
				if err := os.Remove(oldest); err != nil {
					t.Fatal(err)
				}
			} else {
				b, err := os.ReadFile(oldest)
				if err != nil {
					t.Fatal(err)
				}
				b[len(b)/2] ^= 0x20
				if err := os.WriteFile(oldest, b, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			st, err := e.svc.ExpireOnce(ctx, RetentionPolicy{Days: 3, StraddlerLag: -1}, now) // messages 0..48 expire
			if err != nil || st.Unreadable != 1 || st.Dedup != 49-8 {
				t.Fatalf("expired %+v %v", st, err)
			}
			if msgs, _, err := e.svc.historyPage(ctx, directConv("alice", "bob"), nil, 100); err != nil || len(msgs) != 11 {
				t.Fatalf("history after retention: %d %v", len(msgs), err)
			}
			if n := countKeys(t, e, dedupPrefixOf("alice")); n != 11+8 {
				t.Fatalf("%d dedupe keys left, want the 11 kept and the unreadable segment's 8", n)
			}
		})
	}
}

// A conversation whose messages all expired does not take a place on the
// conversation list's page: with a group whose shorter retention expired
// its messages although they came after a direct conversation's, a page
// of one conversation lists the direct one, and says there is no more.
// Before, the expired group took the page's only place and was dropped
// after: an empty page with hasMore true, the direct conversation never
// listed (the list has no cursor to page on).
func TestExpiredConversationTakesNoPlaceOnTheList(t *testing.T) {
	start := time.Now().Add(-200 * time.Hour).Truncate(time.Hour)
	e := newEnv(t, withGroups(), withIDs(hourIDs(start)))
	srv := e.server(t)
	e.groups.add("quiet", "alice", "bob")
	dm := e.send(t, "carol", "alice", "d1") // hour 0
	e.sendGroup(t, "bob", "quiet", "g1")    // hour 1: later activity than the DM
	policy := RetentionPolicy{GroupDays: func(gid string) int { return 1 }}
	if _, err := e.svc.ExpireOnce(context.Background(), policy, start.Add(151*time.Hour)); err != nil {
		t.Fatal(err)
	}
	var l convList
	if r := get(t, srv, "alice", "/chat/conversations?limit=1", &l); r.Status != 200 {
		t.Fatalf("conversations: %d %s", r.Status, r.Body)
	}
	if len(l.Conversations) != 1 || l.Conversations[0].Peer != "carol" || l.Conversations[0].LastMessage.ID != dm.ID || l.HasMore {
		t.Fatalf("alice's conversations, one a page: %+v, hasMore %v; want the one with carol, no more", l.Conversations, l.HasMore)
	}
	l = convList{}
	if get(t, srv, "alice", "/chat/conversations", &l); len(l.Conversations) != 1 || l.HasMore {
		t.Fatalf("alice's conversations: %+v, hasMore %v", l.Conversations, l.HasMore)
	}
}
