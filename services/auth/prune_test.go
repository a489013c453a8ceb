package auth

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/cluster/fsm/fsmtest"
	"github.com/edgechat/edgechat/internal/wire"
)

// Pruning removes the families expired or revoked more than a day ago,
// with their session index entries, in steps (more families than one
// step looks at), the same on a follower; live families, and families
// that ended less than a day ago, stay; a pruned refresh token answers
// as a revoked one did; old ended-session records go.
func TestPruneRemovesOldFamilies(t *testing.T) {
	e := newEnv(t)
	follower, _ := e.follower()
	e.register("alice", "password1")
	ctx := context.Background()
	issue := func(family string, expiresIn time.Duration) {
		t.Helper()
		b, _ := json.Marshal(refreshIssueCmd{Family: family, UID: "alice", Hash: "h", ExpiresAt: e.clock.Now().Add(expiresIn), At: e.clock.Now()})
		if _, err := e.prop.Propose(ctx, wire.CmdRefreshIssue, b); err != nil {
			t.Fatal(err)
		}
	}
	// More expiring families than one step looks at, among live ones.
	for i := range pruneStepKeys + 300 {
		issue(fmt.Sprintf("exp-%05d", i), time.Hour)
	}
	for i := range 10 {
		issue(fmt.Sprintf("live-%02d", i), 90*24*time.Hour)
	}
	revokedLong := e.login("alice", "password1")
	if err := e.svc.Logout(ctx, revokedLong.RefreshToken); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(refreshRevokeCmd{Family: "live-00", Reason: "test", At: e.clock.Now(), EndSession: true})
	if _, err := e.prop.Propose(ctx, wire.CmdRefreshRevoke, b); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(pruneAfter + 2*time.Hour) // the exp- families expired a day and an hour ago
	revokedNow := e.login("alice", "password1")
	if err := e.svc.Logout(ctx, revokedNow.RefreshToken); err != nil {
		t.Fatal(err)
	}

	n, err := e.svc.Prune(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The exp- ones, the long-revoked login and live-00 (revoked then).
	if want := pruneStepKeys + 300 + 2; n != want {
		t.Fatalf("pruned %d families, want %d", n, want)
	}
	for name, db := range map[string]*badger.DB{"leader": e.db, "follower": follower.DB()} {
		var left []string
		for k := range fsmtest.Dump(t, db, prefixRefresh) {
			left = append(left, strings.TrimPrefix(k, prefixRefresh))
		}
		if len(left) != 10 {
			t.Fatalf("%s: %d families left, want the 9 live ones and the one revoked just now: %v", name, len(left), left)
		}
		for _, f := range left {
			if strings.HasPrefix(f, "exp-") || f == "live-00" {
				t.Fatalf("%s: family %s was not pruned", name, f)
			}
		}
		if idx := fsmtest.Dump(t, db, prefixUserFamily+"alice/"); len(idx) != 9 {
			t.Fatalf("%s: %d index entries, want the 9 live families'", name, len(idx))
		}
		if ended := fsmtest.Dump(t, db, prefixSessionEnded); len(ended) != 0 {
			t.Fatalf("%s: old ended-session records left: %v", name, ended)
		}
	}
	if _, err := e.svc.Refresh(ctx, revokedLong.RefreshToken); err == nil {
		t.Fatal("a pruned refresh token worked")
	}
	// Nothing left to prune: a second walk removes nothing.
	if n, err := e.svc.Prune(ctx); err != nil || n != 0 {
		t.Fatalf("a second walk: %d %v", n, err)
	}
	// Only the leader walks.
	var last time.Time
	e.svc.lead = notLeader{}
	if wait := e.svc.pruneDue(ctx, &last); wait != pruneEvery || !last.IsZero() {
		t.Fatalf("a follower's pruneDue: %v, last %v", wait, last)
	}
}

type notLeader struct{}

func (notLeader) IsLeader() bool                  { return false }
func (notLeader) MembersChanged() <-chan struct{} { return nil }

// Pruning ended-session records is the same on every node, whatever
// each node's --access-token-ttl: the handler took its cutoff from the
// applying node's own AccessTTL, so a node with a shorter one deleted
// records that a node with a longer one kept, and their states parted
// (a replicated key present on one node and not on the other).
func TestPruneOfEndedSessionsIsTheSameOnEveryNode(t *testing.T) {
	e := newEnv(t) // the leader: the default 15m
	f := e.prop.NewFollower(t)
	if _, err := New(Config{KeyDir: t.TempDir() + "/keys", Argon2: tinyArgon, AccessTTL: 2 * time.Hour},
		Deps{DB: f.DB(), Proposer: e.prop, FSM: f, Now: e.clock.Now}); err != nil {
		t.Fatal(err)
	}
	e.register("alice", "password1")
	ctx := context.Background()
	for _, c := range []struct {
		t byte
		v any
	}{
		{wire.CmdRefreshIssue, refreshIssueCmd{Family: "fam", UID: "alice", Hash: "h", ExpiresAt: e.clock.Now().Add(90 * 24 * time.Hour), At: e.clock.Now()}},
		{wire.CmdRefreshRevoke, refreshRevokeCmd{Family: "fam", Reason: "test", At: e.clock.Now(), EndSession: true}},
	} {
		b, _ := json.Marshal(c.v)
		if _, err := e.prop.Propose(ctx, c.t, b); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(fsmtest.Dump(t, f.DB(), prefixSessionEnded)); n != 1 {
		t.Fatalf("follower: %d ended-session records after the logout, want 1", n)
	}
	e.clock.Advance(time.Hour) // past the leader's 15m, within the follower's 2h
	if _, err := e.svc.Prune(ctx); err != nil {
		t.Fatal(err)
	}
	leader, follower := fsmtest.Dump(t, e.db, prefixSessionEnded), fsmtest.Dump(t, f.DB(), prefixSessionEnded)
	if len(leader) != len(follower) {
		t.Fatalf("after one prune the leader holds %d ended-session records and the follower %d: the replicated state differs by node", len(leader), len(follower))
	}
}
