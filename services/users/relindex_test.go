package users

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/cluster/fsm/fsmtest"
	"github.com/edgechat/edgechat/internal/wire"
)

// writeEdges writes edges (prefix + "owner/uid") as a version without
// the reverse indexes did, into each db.
func writeEdges(t testing.TB, edges []string, dbs ...*badger.DB) {
	t.Helper()
	for _, db := range dbs {
		wb := db.NewWriteBatch()
		for _, k := range edges {
			if err := wb.Set([]byte(k), []byte("2026-01-01T00:00:00Z")); err != nil {
				t.Fatal(err)
			}
		}
		if err := wb.Flush(); err != nil {
			t.Fatal(err)
		}
	}
}

// graph is db's users state but for the reverse indexes and their marks
// (which a node of an earlier version does not keep).
func graph(t *testing.T, db *badger.DB) map[string]string {
	t.Helper()
	out := fsmtest.Dump(t, db, "r/user/")
	maps.DeleteFunc(out, func(k, _ string) bool {
		return strings.HasPrefix(k, prefixContactOf) || strings.HasPrefix(k, prefixBlockedBy) || strings.HasPrefix(k, "r/user/ix/")
	})
	return out
}

// An erase step read every contact and block of every user to find
// those towards the erased user (relindex.go). Once a node's reverse
// indexes are complete it reads the user's own entries; a node without
// the mark reads every edge as before. Both must write the same keys in
// every step, whatever the budget, for edges made before the indexes
// (indexed by the walk) and after, whatever order user IDs sort in.
func TestEraseAccountFromTheReverseIndexWritesWhatTheScanWrites(t *testing.T) {
	for _, budget := range []int{1, 2, 3, 5, 2000} {
		t.Run(fmt.Sprintf("budget=%d", budget), func(t *testing.T) {
			e := newEnv(t)
			fol := e.follower()
			others := []string{"ali", "ali-x", "ali.y", "ali_z", "alice", "bobby", "obo", "zed"}
			e.users(append([]string{"bob"}, others...)...)
			ctx := context.Background()
			// Older edges: towards bob, bob's own, and between others.
			var older []string
			for i, o := range others {
				if i%2 == 0 {
					older = append(older, prefixContact+o+"/bob")
				}
				if i%3 == 0 {
					older = append(older, prefixBlock+o+"/bob")
				}
				older = append(older, prefixContact+o+"/zed", prefixBlock+o+"/"+others[(i+1)%len(others)])
			}
			older = append(older, prefixContact+"bob/alice", prefixContact+"eve@eu/bob", prefixBlock+"eve@eu/bob")
			writeEdges(t, older, e.db, fol.db)
			// Edges of this version.
			for i, o := range others {
				path := "/user/me/contacts"
				if i%2 == 0 {
					path = "/user/me/blocks"
				}
				if r := e.do("POST", path, `{"uid":"bob"}`, o); r.Code != 201 {
					t.Fatalf("%s %s bob: %d %s", o, path, r.Code, r.Body)
				}
			}
			for _, c := range []struct{ path, uid string }{{"/user/me/contacts", "zed"}, {"/user/me/blocks", "ali-x"}} {
				if r := e.do("POST", c.path, fmt.Sprintf(`{"uid":%q}`, c.uid), "bob"); r.Code != 201 {
					t.Fatalf("bob %s %s: %d %s", c.path, c.uid, r.Code, r.Body)
				}
			}
			if err := e.svc.IndexRelations(ctx); err != nil {
				t.Fatal(err)
			}
			for name, db := range map[string]*badger.DB{"leader": e.db, "follower": fol.db} {
				if got := fsmtest.Dump(t, db, keyRelIndexed); len(got) != 1 {
					t.Fatalf("%s: the walk did not mark the indexes", name)
				}
				for _, p := range []string{prefixContact, prefixBlock} {
					want := 0
					for k := range graph(t, db) {
						if strings.HasPrefix(k, p) && strings.HasSuffix(k, "/bob") {
							want++
						}
					}
					if got := fsmtest.Dump(t, db, reverseOf(p)+"bob/"); len(got) != want || want == 0 {
						t.Fatalf("%s: %s index of bob holds %d, want %d", name, p, len(got), want)
					}
				}
			}
			// The follower reads every edge, as a node that did not apply
			// a whole walk with this version.
			if err := fol.db.Update(func(tx *badger.Txn) error { return tx.Delete([]byte(keyRelIndexed)) }); err != nil {
				t.Fatal(err)
			}
			if !maps.Equal(graph(t, e.db), graph(t, fol.db)) {
				t.Fatal("the replicas differ before the erasure")
			}
			for step := 0; ; step++ {
				if step > 200 {
					t.Fatal("never done")
				}
				var dones [2]bool
				for i, s := range []*Service{e.svc, fol} {
					var after func()
					err := s.db.Update(func(tx *badger.Txn) error {
						var err error
						dones[i], after, err = s.EraseAccount(tx, "bob", fsm.NewBudget(budget))
						return err
					})
					if err != nil {
						t.Fatal(err)
					}
					after()
				}
				if dones[0] != dones[1] {
					t.Fatalf("step %d: done %v from the index, %v from the scan", step, dones[0], dones[1])
				}
				if l, f := graph(t, e.db), graph(t, fol.db); !maps.Equal(l, f) {
					t.Fatalf("step %d: the replicas differ:\nindex %v\nscan  %v", step, l, f)
				}
				if dones[0] {
					break
				}
			}
			for k := range graph(t, e.db) {
				if (strings.HasPrefix(k, prefixContact) || strings.HasPrefix(k, prefixBlock)) && strings.Contains(k, "bob/") && !strings.Contains(k, "bobby") {
					t.Errorf("an edge of bob left: %s", k)
				}
			}
			for _, p := range []string{prefixContactOf + "bob/", prefixBlockedBy + "bob/"} {
				if got := fsmtest.Dump(t, e.db, p); len(got) != 0 {
					t.Errorf("%s keeps %d entries", p, len(got))
				}
			}
			if e.svc.IsContact("alice", "bob") || e.svc.IsBlocked("ali", "bob") {
				t.Error("the caches still show an edge towards bob")
			}
		})
	}
}

// The indexes are marked complete only on a node that applied the
// walk's first step with this code; an edge removed takes its entry.
func TestRelationIndexMarkedOnlyAfterAWholeWalk(t *testing.T) {
	e := newEnv(t)
	e.users("alice", "bob")
	ctx := context.Background()
	var edges []string
	for i := range relIndexStepKeys + 10 {
		edges = append(edges, fmt.Sprintf("%su%05d/alice", prefixContact, i))
	}
	writeEdges(t, edges, e.db)
	step := func(c relIndexCmd) RelIndexStep {
		t.Helper()
		c.V = relIndexCmdVersion
		b, _ := json.Marshal(c)
		v, err := e.prop.Propose(ctx, wire.CmdUserIndex, b)
		if err != nil {
			t.Fatal(err)
		}
		return v.(RelIndexStep)
	}
	marked := func() bool { return len(fsmtest.Dump(t, e.db, keyRelIndexed)) == 1 }
	walk := e.clock.Now().UTC()
	first := step(relIndexCmd{Walk: walk})
	if first.Next == "" || marked() {
		t.Fatalf("a first step: next %q, marked %v", first.Next, marked())
	}
	if last := step(relIndexCmd{After: first.Next, Walk: walk.Add(time.Minute)}); last.Next != "" || marked() {
		t.Fatal("the end of a walk this node did not index from its start marked the indexes")
	}
	if err := e.svc.IndexRelations(ctx); err != nil || !marked() {
		t.Fatalf("a whole walk: %v, marked %v", err, marked())
	}
	if got := fsmtest.Dump(t, e.db, prefixContactOf+"alice/"); len(got) != relIndexStepKeys+10 {
		t.Fatalf("alice's reverse index: %d, want %d", len(got), relIndexStepKeys)
	}
	if r := e.do("POST", "/user/me/blocks", `{"uid":"alice"}`, "bob"); r.Code != 201 {
		t.Fatalf("block: %d", r.Code)
	}
	if got := fsmtest.Dump(t, e.db, prefixBlockedBy+"alice/bob"); len(got) != 1 {
		t.Fatal("a block is not indexed")
	}
	if r := e.do("DELETE", "/user/me/blocks/alice", "", "bob"); r.Code != 204 && r.Code != 200 {
		t.Fatalf("unblock: %d %s", r.Code, r.Body)
	}
	if got := fsmtest.Dump(t, e.db, prefixBlockedBy+"alice/bob"); len(got) != 0 {
		t.Fatal("an unblock left its index entry")
	}
}

// BenchmarkEraseAccountAmongOthersContacts: the first erase step of a
// user with one contact, one block and one contact towards them, among
// others' contacts and blocks (5 each): the step read every edge of
// every user; from the reverse index it reads the user's own.
func BenchmarkEraseAccountAmongOthersContacts(b *testing.B) {
	for _, others := range []int{2000, 20000} {
		b.Run(fmt.Sprintf("others=%d", others), func(b *testing.B) {
			e := newEnv(b)
			e.users("bob", "alice")
			var edges []string
			for i := range others {
				for j := 1; j <= 5; j++ {
					edges = append(edges, fmt.Sprintf("%suser%05d/user%05d", prefixContact, i, (i+j)%others),
						fmt.Sprintf("%suser%05d/user%05d", prefixBlock, i, (i+j+5)%others))
				}
			}
			edges = append(edges, prefixContact+"bob/alice", prefixBlock+"bob/user00001", prefixContact+"alice/bob")
			writeEdges(b, edges, e.db)
			if err := e.svc.IndexRelations(context.Background()); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for range b.N {
				tx := e.db.NewTransaction(true)
				if done, _, err := e.svc.EraseAccount(tx, "bob", fsm.NewBudget(2000)); err != nil || !done {
					b.Fatal(done, err)
				}
				tx.Discard()
			}
		})
	}
}
