package auth

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/cluster/fsm/fsmtest"
	"github.com/edgechat/edgechat/internal/wire"
)

// unindex takes family out of uid's index, as a family made before the
// index existed was.
func (e *env) unindex(t *testing.T, db *badger.DB, uid, family string) {
	t.Helper()
	if err := db.Update(func(tx *badger.Txn) error { return unindexFamily(tx, uid, family) }); err != nil {
		t.Fatal(err)
	}
}

// A session made before the family index existed and not used since was
// missing from the session list (it could not be signed out alone), and
// made sign out everywhere read every user's families on every node. A
// prune walk indexes it and marks the index complete, on every node;
// sign out everywhere then revokes it from the index, and only the
// user's own.
func TestPruneIndexesSessionsMadeBeforeTheIndex(t *testing.T) {
	e := newEnv(t)
	follower, _ := e.follower()
	e.register("alice", "password1")
	e.register("bob", "password2")
	old := e.login("alice", "password1")
	current := e.login("alice", "password1")
	bobs := e.login("bob", "password2")
	family, _, _ := parseRefresh(old.RefreshToken)
	for _, db := range []*badger.DB{e.db, follower.DB()} {
		e.unindex(t, db, "alice", family)
	}
	// Without the mark, sign out everywhere still finds it (it reads
	// every family): checked on a copy of the state below, after the walk.
	if got := e.sessions(current.AccessToken); len(got) != 1 {
		t.Fatalf("before the walk alice lists %d sessions, want the indexed 1: %+v", len(got), got)
	}
	if _, err := e.svc.Prune(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := e.sessions(current.AccessToken); len(got) != 2 {
		t.Fatalf("after the walk alice lists %d sessions, want 2: %+v", len(got), got)
	}
	for name, db := range map[string]*badger.DB{"leader": e.db, "follower": follower.DB()} {
		if idx := fsmtest.Dump(t, db, prefixUserFamily+"alice/"); len(idx) != 2 {
			t.Fatalf("%s: alice's index holds %d families, want 2", name, len(idx))
		}
		if marks := fsmtest.Dump(t, db, keyFamiliesIndexed); len(marks) != 1 {
			t.Fatalf("%s: the index is not marked complete", name)
		}
	}
	if n, err := e.svc.LogoutAll(context.Background(), "alice"); err != nil || n != 2 {
		t.Fatalf("logout-all revoked %d (%v), want alice's 2", n, err)
	}
	for name, db := range map[string]*badger.DB{"leader": e.db, "follower": follower.DB()} {
		if live, revoked := countFamilies(t, db, "alice"); live != 0 || revoked != 2 {
			t.Fatalf("%s: alice has %d live and %d revoked families, want 0 and 2", name, live, revoked)
		}
		if live, revoked := countFamilies(t, db, "bob"); live != 1 || revoked != 0 {
			t.Fatalf("%s: bob has %d live and %d revoked families, want 1 and 0", name, live, revoked)
		}
	}
	if _, err := e.svc.Refresh(context.Background(), bobs.RefreshToken); err != nil {
		t.Fatalf("bob's session: %v", err)
	}
}

// Without the mark (no walk yet, or a node that did not index a whole
// walk) sign out everywhere reads every family and revokes unindexed
// ones too.
func TestSignOutEverywhereFindsUnindexedFamiliesBeforeTheWalk(t *testing.T) {
	e := newEnv(t)
	e.register("alice", "password1")
	old := e.login("alice", "password1")
	family, _, _ := parseRefresh(old.RefreshToken)
	e.unindex(t, e.db, "alice", family)
	if n, err := e.svc.LogoutAll(context.Background(), "alice"); err != nil || n != 1 {
		t.Fatalf("logout-all revoked %d (%v), want 1", n, err)
	}
}

// The index is marked complete only by a node that applied the walk's
// first step with this code: not from a walk whose steps came without
// their walk's time (an earlier version's leader), nor from the last
// steps of a walk whose start the node applied before it was upgraded.
func TestFamilyIndexMarkedOnlyAfterAWholeWalk(t *testing.T) {
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
	marked := func() bool { return len(fsmtest.Dump(t, e.db, keyFamiliesIndexed)) == 1 }
	// An earlier version's walk: no walk time.
	first := step(authPruneCmd{})
	if last := step(authPruneCmd{After: first.Next}); last.Next != "" || marked() {
		t.Fatalf("a walk without its time marked the index (next %q)", last.Next)
	}
	// The last step of a walk whose first step this node did not index.
	walk := e.clock.Now().UTC()
	if last := step(authPruneCmd{After: first.Next, Walk: walk}); last.Next != "" || marked() {
		t.Fatal("the end of a walk this node did not index from its start marked the index")
	}
	// A whole walk does.
	first = step(authPruneCmd{Walk: walk})
	if last := step(authPruneCmd{After: first.Next, Walk: walk}); last.Next != "" || !marked() {
		t.Fatal("a whole walk did not mark the index")
	}
}

// BenchmarkSignOutEverywhere: one user's sign-out everywhere among
// 20,000 other users' sessions, with the index marked complete (a walk
// done) and without (every family read).
func BenchmarkSignOutEverywhere(b *testing.B) {
	for _, walked := range []bool{false, true} {
		b.Run(fmt.Sprintf("indexed=%v", walked), func(b *testing.B) {
			e := newEnv(b)
			ctx := context.Background()
			var cmds [][]byte
			for i := range 20000 {
				c, _ := json.Marshal(refreshIssueCmd{Family: fmt.Sprintf("o-%06d", i), UID: fmt.Sprintf("user%05d", i), Hash: "h",
					ExpiresAt: e.clock.Now().Add(time.Hour), At: e.clock.Now()})
				cmds = append(cmds, c)
			}
			for _, c := range cmds {
				if _, err := e.prop.Propose(ctx, wire.CmdRefreshIssue, c); err != nil {
					b.Fatal(err)
				}
			}
			if walked {
				if _, err := e.svc.Prune(ctx); err != nil {
					b.Fatal(err)
				}
			}
			e.register("alice", "password1")
			b.ResetTimer()
			for range b.N {
				if _, err := e.svc.LogoutAll(ctx, "alice"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
