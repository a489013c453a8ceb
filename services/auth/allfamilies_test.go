package auth

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

// authState is db's auth state but for the index of every family and
// its marks (which a node of an earlier version does not keep).
func authState(t *testing.T, db *badger.DB) map[string]string {
	t.Helper()
	out := fsmtest.Dump(t, db, "r/auth/")
	maps.DeleteFunc(out, func(k, _ string) bool { return strings.HasPrefix(k, "r/auth/rtall") })
	return out
}

// The last step of an account erasure read and decoded every user's
// refresh-token families to find the user's (revoked ones too). Once a
// node's index of every family is complete it reads the user's own
// entries; a node without the mark reads every family. Both must delete
// the same families in every step, whatever the budget, for families
// made before the index (indexed by the prune walk) and after.
func TestEraseFamiliesFromTheIndexDeletesWhatTheScanDeletes(t *testing.T) {
	for _, budget := range []int{1, 2, 3, 2000} {
		t.Run(fmt.Sprintf("budget=%d", budget), func(t *testing.T) {
			e := newEnv(t)
			follower, _ := e.follower()
			ctx := context.Background()
			now := e.clock.Now()
			propose := func(typ byte, v any) {
				t.Helper()
				b, _ := json.Marshal(v)
				if _, err := e.prop.Propose(ctx, typ, b); err != nil {
					t.Fatal(err)
				}
			}
			users := []string{"alice", "bob", "alicia"}
			for _, u := range users {
				e.register(u, "password1")
			}
			for i := range 30 {
				uid := users[i%len(users)]
				family := fmt.Sprintf("f-%03d", (i*7)%30) // interleaved IDs
				propose(wire.CmdRefreshIssue, refreshIssueCmd{Family: family, UID: uid, Hash: "h",
					ExpiresAt: now.Add(time.Hour), At: now})
				if i%4 == 0 {
					propose(wire.CmdRefreshRevoke, refreshRevokeCmd{Family: family, Reason: "test", At: now})
				}
			}
			// Families made before the index: no entry.
			for _, db := range []*badger.DB{e.db, follower.DB()} {
				err := db.Update(func(tx *badger.Txn) error {
					for i := range 30 {
						uid := users[i%len(users)]
						family := fmt.Sprintf("f-%03d", (i*7)%30)
						if i%2 == 0 {
							if err := unindexAllFamily(tx, uid, family); err != nil {
								return err
							}
						}
					}
					return nil
				})
				if err != nil {
					t.Fatal(err)
				}
			}
			if _, err := e.svc.Prune(ctx); err != nil {
				t.Fatal(err)
			}
			for name, db := range map[string]*badger.DB{"leader": e.db, "follower": follower.DB()} {
				if got := fsmtest.Dump(t, db, keyAllFamiliesIndexed); len(got) != 1 {
					t.Fatalf("%s: the walk did not mark the index", name)
				}
				live, revoked := countFamilies(t, db, "alice")
				if got := fsmtest.Dump(t, db, prefixAllFamilies+"alice/"); len(got) != live+revoked || revoked == 0 {
					t.Fatalf("%s: alice's index holds %d, want %d live + %d revoked", name, len(got), live, revoked)
				}
			}
			if err := follower.DB().Update(func(tx *badger.Txn) error { return tx.Delete([]byte(keyAllFamiliesIndexed)) }); err != nil {
				t.Fatal(err)
			}
			if !maps.Equal(authState(t, e.db), authState(t, follower.DB())) {
				t.Fatal("the replicas differ before the erasure")
			}
			for step := 0; ; step++ {
				if step > 100 {
					t.Fatal("never done")
				}
				var dones [2]bool
				for i, db := range []*badger.DB{e.db, follower.DB()} {
					err := db.Update(func(tx *badger.Txn) error {
						var err error
						dones[i], err = eraseFamilies(tx, "alice", fsm.NewBudget(budget))
						return err
					})
					if err != nil {
						t.Fatal(err)
					}
				}
				if dones[0] != dones[1] {
					t.Fatalf("step %d: done %v from the index, %v from the scan", step, dones[0], dones[1])
				}
				if l, f := authState(t, e.db), authState(t, follower.DB()); !maps.Equal(l, f) {
					t.Fatalf("step %d: the replicas differ", step)
				}
				if dones[0] {
					break
				}
			}
			if live, revoked := countFamilies(t, e.db, "alice"); live+revoked != 0 {
				t.Fatalf("alice keeps %d live and %d revoked families", live, revoked)
			}
			if live, _ := countFamilies(t, e.db, "alicia"); live == 0 {
				t.Fatal("alicia's families went too")
			}
			if got := fsmtest.Dump(t, e.db, prefixAllFamilies+"alice/"); len(got) != 0 {
				t.Fatalf("alice's index keeps %d entries", len(got))
			}
		})
	}
}

// BenchmarkEraseFamilies: the last step of an account erasure (the
// user's own 3 families) among 20,000 other users' sessions, with the
// index of every family complete and without (every family read).
func BenchmarkEraseFamilies(b *testing.B) {
	for _, walked := range []bool{false, true} {
		b.Run(fmt.Sprintf("indexed=%v", walked), func(b *testing.B) {
			e := newEnv(b)
			ctx := context.Background()
			for i := range 20000 {
				c, _ := json.Marshal(refreshIssueCmd{Family: fmt.Sprintf("o-%06d", i), UID: fmt.Sprintf("user%05d", i), Hash: "h",
					ExpiresAt: e.clock.Now().Add(time.Hour), At: e.clock.Now()})
				if _, err := e.prop.Propose(ctx, wire.CmdRefreshIssue, c); err != nil {
					b.Fatal(err)
				}
			}
			e.register("alice", "password1")
			for range 3 {
				e.login("alice", "password1")
			}
			if walked {
				if _, err := e.svc.Prune(ctx); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			for range b.N {
				tx := e.db.NewTransaction(true)
				if done, err := eraseFamilies(tx, "alice", fsm.NewBudget(eraseStepWrites)); err != nil || !done {
					b.Fatal(done, err)
				}
				tx.Discard()
			}
		})
	}
}

// A node that applied a walk's first step with the version before this
// one recorded the walk for the session index, not for the index of
// every family (which it did not fill): the end of that walk marks the
// session index, not this one.
func TestAllFamiliesIndexMarkedOnlyAfterAWholeWalkOfThisVersion(t *testing.T) {
	e := newEnv(t)
	e.register("alice", "password1")
	ctx := context.Background()
	for i := range pruneStepKeys + 10 { // two steps
		b, _ := json.Marshal(refreshIssueCmd{Family: fmt.Sprintf("f-%05d", i), UID: "alice", Hash: "h",
			ExpiresAt: e.clock.Now().Add(time.Hour), At: e.clock.Now()})
		if _, err := e.prop.Propose(ctx, wire.CmdRefreshIssue, b); err != nil {
			t.Fatal(err)
		}
	}
	step := func(c authPruneCmd) PruneStep {
		t.Helper()
		c.V, c.At = commandVersion, e.clock.Now().UTC()
		v, err := e.svc.propose(ctx, wire.CmdAuthPrune, c)
		if err != nil {
			t.Fatal(err)
		}
		return v.(PruneStep)
	}
	walk := e.clock.Now().UTC()
	first := step(authPruneCmd{Walk: walk})
	// As the version before this one left its first step.
	if err := e.db.Update(func(tx *badger.Txn) error { return tx.Delete([]byte(keyAllIndexWalk)) }); err != nil {
		t.Fatal(err)
	}
	if last := step(authPruneCmd{After: first.Next, Walk: walk}); last.Next != "" {
		t.Fatalf("a third step: %q", last.Next)
	}
	if len(fsmtest.Dump(t, e.db, keyFamiliesIndexed)) != 1 || len(fsmtest.Dump(t, e.db, keyAllFamiliesIndexed)) != 0 {
		t.Fatal("want the session index marked and the index of every family not")
	}
	if _, err := e.svc.Prune(ctx); err != nil {
		t.Fatal(err)
	}
	if len(fsmtest.Dump(t, e.db, keyAllFamiliesIndexed)) != 1 {
		t.Fatal("a whole walk did not mark the index of every family")
	}
}
