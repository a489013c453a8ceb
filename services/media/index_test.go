package media

import (
	"context"
	"encoding/base32"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/cluster/fsm/fsmtest"
	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/internal/wire"
)

// seededID is the n-th media ID of seedOlder.
func seededID(n int) string {
	var b [15]byte
	binary.BigEndian.PutUint64(b[7:], uint64(n))
	return strings.ToLower(base32.StdEncoding.EncodeToString(b[:]))
}

// seedOlder writes, as a version without the indexes by user did (no
// index entries), n ready records of owner(i) sent to grantee(i) alone
// ("" for none), into each db.
func seedOlder(t testing.TB, at time.Time, n int, owner, grantee func(int) string, dbs ...*badger.DB) {
	t.Helper()
	for _, db := range dbs {
		wb := db.NewWriteBatch()
		for i := range n {
			r := Record{ID: seededID(i), Owner: owner(i), Status: StatusReady, Tier: TierProcessed, Node: "n1",
				Size: 3, OutputSize: 3, Sent: grantee(i) != "", CreatedAt: at, UpdatedAt: at}
			v, _ := json.Marshal(r)
			if err := wb.Set(recordKey(r.ID), v); err != nil {
				t.Fatal(err)
			}
			if g := grantee(i); g != "" {
				if err := wb.Set(grantUserKey(r.ID, g), nil); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := wb.Flush(); err != nil {
			t.Fatal(err)
		}
	}
}

// primary is db's media state but for the indexes by user (which a node
// of an earlier version does not keep).
func primary(t *testing.T, db *badger.DB) map[string]string {
	t.Helper()
	out := fsmtest.Dump(t, db, "r/media/")
	maps.DeleteFunc(out, func(k, _ string) bool { return strings.HasPrefix(k, "r/media/i") })
	return out
}

func setMark(t *testing.T, db *badger.DB, present bool) {
	t.Helper()
	err := db.Update(func(tx *badger.Txn) error {
		if present {
			return tx.Set([]byte(keyMediaIndexed), []byte(`"2026-01-01T00:00:00Z"`))
		}
		return tx.Delete([]byte(keyMediaIndexed))
	})
	if err != nil {
		t.Fatal(err)
	}
}

// An erase step read every media record and every user grant of every
// user (index.go). Once a node's index is complete it reads the user's
// own entries; a node without the mark (upgraded during the walk) reads
// every key as before. Both must write the same keys in every step,
// whatever the budget, for records and grants made before the index
// (indexed by the walk) and after.
func TestEraseAccountFromTheIndexWritesWhatTheScanWrites(t *testing.T) {
	for _, budget := range []int{1, 2, 3, 7, 2000} {
		t.Run(fmt.Sprintf("budget=%d", budget), func(t *testing.T) {
			e := newEnv(t, Config{Worker: true, SharedStore: true})
			f := e.prop.NewFollower(t)
			e.newService(Config{Worker: true, SharedStore: true}, f.DB(), f)
			ctx := context.Background()
			// Older data: bob's uploads, some sent to alice; others' sent to bob.
			users := []string{"alice", "bob", "bobby", "carol", "ob"}
			owner := func(i int) string { return users[i%len(users)] }
			grantee := func(i int) string {
				switch i % 3 {
				case 0:
					return users[(i+1)%len(users)]
				case 1:
					return "bob"
				}
				return ""
			}
			seedOlder(t, e.clock.Now(), 40, owner, grantee, e.prop.DB, f.DB())
			// Media of other regions sent to bob: the index's ID order is
			// not the grants' key order for these ("x@eu" sorts before
			// "x@eu-west", "x@eu/bob" after "x@eu-west/bob").
			remote := []string{seededID(100) + "@eu", seededID(100) + "@eu-west", seededID(100)}
			for _, db := range []*badger.DB{e.prop.DB, f.DB()} {
				err := db.Update(func(tx *badger.Txn) error {
					for _, id := range remote {
						r := Record{ID: id, Owner: "dave@eu", Status: StatusReady, Sent: true, Source: "eu", SourceID: "x"}
						if err := fsm.SetJSON(tx, recordKey(id), r); err != nil {
							return err
						}
						if err := tx.Set(grantUserKey(id, "bob"), nil); err != nil {
							return err
						}
					}
					return nil
				})
				if err != nil {
					t.Fatal(err)
				}
			}
			olderOwned, olderGrants := 0, len(remote)
			for i := range 40 {
				if owner(i) == "bob" {
					olderOwned++
				}
				if grantee(i) == "bob" {
					olderGrants++
				}
			}
			// Data of this version.
			up := func(owner, name string) Record {
				r := e.upload(owner, name, name)
				e.svc.workOnce(ctx)
				return r
			}
			for i := range 3 {
				d, g, _ := up("bob", fmt.Sprintf("d%d.txt", i)), up("bob", fmt.Sprintf("g%d.txt", i)), up("bob", fmt.Sprintf("u%d.txt", i))
				for _, a := range []struct{ m, sender, peer, gid string }{{d.ID, "bob", "alice", ""}, {g.ID, "bob", "", "team"}, {g.ID, "bob", "carol", ""}} {
					if err := e.svc.Attach(ctx, a.sender, &wire.Media{ID: a.m}, a.peer, a.gid); err != nil {
						t.Fatal(err)
					}
				}
				for _, other := range []string{"alice", "carol", "bobby"} {
					r := up(other, fmt.Sprintf("%s%d.txt", other, i))
					if err := e.svc.Attach(ctx, other, &wire.Media{ID: r.ID}, "bob", ""); err != nil {
						t.Fatal(err)
					}
				}
			}
			if err := e.svc.IndexWalk(ctx); err != nil {
				t.Fatal(err)
			}
			for name, db := range map[string]*badger.DB{"leader": e.prop.DB, "follower": f.DB()} {
				if got := fsmtest.Dump(t, db, keyMediaIndexed); len(got) != 1 {
					t.Fatalf("%s: the walk did not mark the index", name)
				}
				// bob's older uploads, and 9 of this version.
				if got := fsmtest.Dump(t, db, prefixOwnerIndex+"bob/"); len(got) != olderOwned+9 {
					t.Fatalf("%s: bob's owner index holds %d, want %d", name, len(got), olderOwned+9)
				}
				// The older grants to bob and 9 of this version.
				if got := fsmtest.Dump(t, db, prefixGrantIndex+"bob/"); len(got) != olderGrants+9 {
					t.Fatalf("%s: bob's grant index holds %d, want %d", name, len(got), olderGrants+9)
				}
			}
			// The follower reads every key, as a node that did not apply a
			// whole walk with this version.
			setMark(t, f.DB(), false)
			// No quota counters (those of days long gone were...): else a
			// step that ends at the grants is never done (the quota's
			// DeleteMatching finds no budget), whatever the grants said.
			for _, db := range []*badger.DB{e.prop.DB, f.DB()} {
				if err := db.Update(func(tx *badger.Txn) error { return fsm.DeletePrefix(tx, []byte(prefixQuota)) }); err != nil {
					t.Fatal(err)
				}
			}
			if !equalMaps(primary(t, e.prop.DB), primary(t, f.DB())) {
				t.Fatal("the replicas differ before the erasure")
			}
			for step := 0; ; step++ {
				if step > 200 {
					t.Fatal("never done")
				}
				var dones [2]bool
				for i, db := range []*badger.DB{e.prop.DB, f.DB()} {
					err := db.Update(func(tx *badger.Txn) error {
						var err error
						dones[i], _, err = e.svc.EraseAccount(tx, "bob", fsm.NewBudget(budget))
						return err
					})
					if err != nil {
						t.Fatal(err)
					}
				}
				if dones[0] != dones[1] {
					t.Fatalf("step %d: done %v from the index, %v from the scan", step, dones[0], dones[1])
				}
				if l, fl := primary(t, e.prop.DB), primary(t, f.DB()); !equalMaps(l, fl) {
					t.Fatalf("step %d: the replicas differ:\nindex %v\nscan  %v", step, l, fl)
				}
				if dones[0] {
					break
				}
			}
			left := primary(t, e.prop.DB)
			for k, v := range left {
				if strings.HasPrefix(k, prefixGrantUser) && strings.HasSuffix(k, "/bob") {
					t.Errorf("grant to bob left: %s", k)
				}
				if strings.HasPrefix(k, prefixRecord) && strings.Contains(v, `"owner":"bob"`) && !strings.Contains(v, `"erased":true`) {
					var r Record
					_ = json.Unmarshal([]byte(v), &r)
					if ok, _ := hasKeysIn(e.prop.DB, grantGroupPrefix(r.ID)); !ok {
						t.Errorf("bob's upload %s not erased", r.ID)
					}
				}
			}
			if got := fsmtest.Dump(t, e.prop.DB, prefixGrantIndex+"bob/"); len(got) != 0 {
				t.Errorf("bob's grant index keeps %d entries", len(got))
			}
		})
	}
}

func hasKeysIn(db *badger.DB, prefix []byte) (ok bool, err error) {
	err = db.View(func(tx *badger.Txn) error { ok, err = hasKeys(tx, prefix); return err })
	return ok, err
}

func equalMaps(a, b map[string]string) bool { return maps.Equal(a, b) }

// The index is marked complete only on a node that applied the walk's
// first step with this code: not from the last steps of a walk whose
// start it did not index. A deleted record and an expired grant take
// their index entries with them.
func TestMediaIndexMarkedOnlyAfterAWholeWalk(t *testing.T) {
	e := newEnv(t, Config{})
	ctx := context.Background()
	seedOlder(t, e.clock.Now(), indexStepKeys, func(int) string { return "alice" }, func(i int) string { return fmt.Sprintf("u%d", i%7) }, e.prop.DB)
	step := func(c indexCmd) IndexStep {
		t.Helper()
		c.V = indexCmdVersion
		b, _ := json.Marshal(c)
		v, err := e.prop.Propose(ctx, wire.CmdMediaIndex, b)
		if err != nil {
			t.Fatal(err)
		}
		return v.(IndexStep)
	}
	marked := func() bool { return len(fsmtest.Dump(t, e.prop.DB, keyMediaIndexed)) == 1 }
	walk := e.clock.Now().UTC()
	first := step(indexCmd{Walk: walk})
	if first.Next == "" || marked() {
		t.Fatalf("a first step of %d keys: next %q, marked %v", 2*indexStepKeys, first.Next, marked())
	}
	other := walk.Add(time.Minute)
	if last := step(indexCmd{After: first.Next, Walk: other}); last.Next != "" || marked() {
		t.Fatal("the end of a walk this node did not index from its start marked the index")
	}
	if err := e.svc.IndexWalk(ctx); err != nil || !marked() {
		t.Fatalf("a whole walk: %v, marked %v", err, marked())
	}
	if got := fsmtest.Dump(t, e.prop.DB, prefixOwnerIndex+"alice/"); len(got) != indexStepKeys {
		t.Fatalf("alice's index: %d, want %d", len(got), indexStepKeys)
	}
	if got := fsmtest.Dump(t, e.prop.DB, prefixGrantIndex); len(got) != indexStepKeys {
		t.Fatalf("grant index: %d, want %d", len(got), indexStepKeys)
	}
	id := seededID(3)
	b, _ := json.Marshal(deleteCmd{IDs: []string{id}})
	if _, err := e.prop.Propose(ctx, wire.CmdMediaDelete, b); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{string(ownerIndexKey("alice", id)), string(grantIndexKey("u3", id))} {
		if got := fsmtest.Dump(t, e.prop.DB, k); len(got) != 0 {
			t.Errorf("%s left after the record was deleted", k)
		}
	}
}

// BenchmarkEraseAccountAmongOthers: one erase step of a user with one
// upload and one grant among others' uploads, each sent to one user:
// the step read every record and grant (its cost grew with the others'
// media); from the index it reads the user's own.
func BenchmarkEraseAccountAmongOthers(b *testing.B) {
	for _, others := range []int{2000, 20000} {
		b.Run(fmt.Sprintf("others=%d", others), func(b *testing.B) {
			prop := fsmtest.New(b)
			now := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
			svc, err := New(Config{Node: "n1", TempDir: b.TempDir()}, Deps{DB: prop.DB, Proposer: prop, FSM: prop.FSM,
				Store: newMemStore(), Publisher: &fakePub{}, Logger: testutil.QuietLogger(), Now: func() time.Time { return now }})
			if err != nil {
				b.Fatal(err)
			}
			seedOlder(b, now, others+2, func(i int) string {
				if i == others {
					return "alice"
				}
				return fmt.Sprintf("user%05d", i)
			}, func(i int) string {
				if i == others+1 {
					return "alice"
				}
				return fmt.Sprintf("user%05d", i+1)
			}, prop.DB)
			if err := svc.IndexWalk(context.Background()); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for range b.N {
				tx := prop.DB.NewTransaction(true)
				if done, _, err := svc.EraseAccount(tx, "alice", fsm.NewBudget(2000)); err != nil || !done {
					b.Fatal(done, err)
				}
				tx.Discard()
			}
		})
	}
}
