package users

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/internal/wire"
)

func TestProfileCacheInvalidation(t *testing.T) {
	e := newEnv(t)
	e.users("alice:Alice")
	hits := e.cacheCount(cacheProfiles, "hit")
	etag := e.do("GET", "/user/alice", "", "bob").Header.Get("ETag")
	e.do("GET", "/user/alice", "", "bob")
	if h := e.cacheCount(cacheProfiles, "hit"); h < hits+1 {
		t.Fatalf("profile hits did not move: %v → %v", hits, h)
	}
	if e.cacheCount(cacheProfiles, "miss") < 1 {
		t.Fatal("no miss counted")
	}
	// The change is visible right after Propose returns, here and by ETag.
	if _, err := e.svc.Update(context.Background(), "alice", ptr("Alicia"), nil); err != nil {
		t.Fatal(err)
	}
	if p, _ := e.svc.Profile("alice"); p.DisplayName != "Alicia" {
		t.Fatalf("stale profile: %+v", p)
	}
	if r := e.do("GET", "/user/alice", "", "bob", "If-None-Match", etag); r.Code != 200 || r.profile(t).DisplayName != "Alicia" {
		t.Fatalf("stale GET: %d %s", r.Code, r.Body)
	}
}

func ptr[T any](v T) *T { return &v }

func TestMembershipCacheInvalidation(t *testing.T) {
	e := newEnv(t)
	e.users("owen", "ann", "ben")
	g := e.createGroup("owen", "T", "ann")
	// Warm every cache the removal must invalidate.
	if _, ok := e.svc.Role(g.ID, "ann"); !ok {
		t.Fatal("ann not a member")
	}
	if !e.svc.SharesGroup("ann", "owen") {
		t.Fatal("SharesGroup")
	}
	if gs, _ := e.svc.GroupsOf("ann"); len(gs) != 1 {
		t.Fatal(gs)
	}
	misses := e.cacheCount(cacheMembers, "miss")
	for range 10 {
		e.svc.Role(g.ID, "ann")
	}
	if e.cacheCount(cacheMembers, "miss") != misses || e.cacheCount(cacheMembers, "hit") < 10 {
		t.Fatal("Role is not served from the cache")
	}
	if r := e.do("DELETE", "/user/groups/"+g.ID+"/members/ann", "", "owen"); r.Code != 204 {
		t.Fatal(r.Code)
	}
	if _, ok := e.svc.Role(g.ID, "ann"); ok {
		t.Fatal("stale Role after removal")
	}
	if e.svc.SharesGroup("ann", "owen") {
		t.Fatal("stale SharesGroup")
	}
	if gs, _ := e.svc.GroupsOf("ann"); len(gs) != 0 {
		t.Fatalf("stale GroupsOf: %v", gs)
	}
	if ids, _ := e.svc.MemberIDs(g.ID); !slices.Equal(ids, []string{"owen"}) {
		t.Fatalf("stale MemberIDs: %v", ids)
	}
	if r := e.do("GET", "/user/groups/"+g.ID, "", "ann"); r.Code != 404 {
		t.Fatalf("removed member still reads the group: %d", r.Code)
	}
	e.do("POST", "/user/groups/"+g.ID+"/members", `{"uid":"ben"}`, "owen")
	if r, ok := e.svc.Role(g.ID, "ben"); !ok || r != RoleMember {
		t.Fatal("stale Role after add")
	}
}

// TestInvalidationOnEveryNode: a node that only applies the log (not the
// one that proposed) drops its cached membership and tells its
// OnMemberRemoved listeners too.
func TestInvalidationOnEveryNode(t *testing.T) {
	e := newEnv(t)
	other := e.follower()
	var rm removals
	other.OnMemberRemoved(rm.add)
	e.users("owen", "ann")
	g := e.createGroup("owen", "T", "ann")
	if r, ok := other.Role(g.ID, "ann"); !ok || r != RoleMember {
		t.Fatalf("follower: %s %v", r, ok)
	}
	if !other.SharesGroup("ann", "owen") {
		t.Fatal("follower SharesGroup")
	}
	if r := e.do("DELETE", "/user/groups/"+g.ID+"/members/ann", "", "owen"); r.Code != 204 {
		t.Fatal(r.Code)
	}
	if _, ok := other.Role(g.ID, "ann"); ok || other.SharesGroup("ann", "owen") {
		t.Fatal("follower kept a stale membership")
	}
	if got := rm.list(); !slices.Equal(got, []string{g.ID + "/ann"}) {
		t.Fatalf("follower OnMemberRemoved: %v", got)
	}
	if p, _ := other.Profile("ann"); p.DisplayName != "ann" {
		t.Fatalf("follower profile: %+v", p)
	}
	if _, err := e.svc.Update(t.Context(), "ann", ptr("Ann B"), nil); err != nil {
		t.Fatal(err)
	}
	if p, _ := other.Profile("ann"); p.DisplayName != "Ann B" {
		t.Fatalf("follower profile: %+v", p)
	}
}

// TestCacheLoadRace: a load that read the database before a commit must
// not store its old value after the commit's invalidation.
func TestCacheLoadRace(t *testing.T) {
	c := newLRU[int]("t", 10, cacheCounter(nil))
	_, gen, _ := c.get("k") // a loader starts and reads 1 ...
	c.remove("k")           // ... a commit invalidates ...
	c.add("k", 1, gen)      // ... the loader stores its stale value
	if _, _, ok := c.get("k"); ok {
		t.Fatal("stale value cached")
	}
	_, gen, _ = c.get("k")
	c.add("k", 2, gen)
	if v, _, ok := c.get("k"); !ok || v != 2 {
		t.Fatal("fresh value not cached")
	}
	// The cap holds and evicts the least recently used.
	for i := range 20 {
		_, gen, _ := c.get(fmt.Sprint(i))
		c.add(fmt.Sprint(i), i, gen)
	}
	if _, _, ok := c.get("k"); ok || len(c.m) != 10 || c.ll.Len() != 10 {
		t.Fatalf("cap: %d entries", len(c.m))
	}
}

func TestCacheCounterSharedRegistry(t *testing.T) {
	// Two services (two nodes in one process) on one registry share the
	// counter instead of failing to register.
	reg := prometheus.NewRegistry()
	a, b := cacheCounter(reg), cacheCounter(reg)
	if a != b {
		t.Fatal("second registration did not reuse the first collector")
	}
}

func TestRestorePurgesCaches(t *testing.T) {
	e := newEnv(t)
	e.users("owen", "ann")
	g := e.createGroup("owen", "T", "ann")
	e.svc.Role(g.ID, "ann")
	e.svc.cache.purge() // what OnRestore runs
	if len(e.svc.cache.members.m) != 0 {
		t.Fatal("not purged")
	}
	if _, ok := e.svc.Role(g.ID, "ann"); !ok {
		t.Fatal("reload after purge")
	}
}

// TestLargeGroup builds a 10,000-member group (create with 1,000, then
// batches of 1,000) and checks counts, the cap, Role and the events.
func TestLargeGroup(t *testing.T) {
	if testing.Short() {
		t.Skip("large group")
	}
	e := newEnv(t)
	uids := bigGroup(t, e, DefaultMaxGroupMembers)
	gid := uids[0]
	uids = uids[1:]
	e.users("extra")
	if r := e.do("POST", "/user/groups/"+gid+"/members", `{"uid":"extra"}`, "owner"); r.Code != 409 || r.errCode() != CodeGroupFull {
		t.Fatalf("over the cap: %d %s", r.Code, r.Body)
	}
	ids, err := e.svc.MemberIDs(gid)
	if err != nil || len(ids) != DefaultMaxGroupMembers {
		t.Fatalf("MemberIDs: %d %v", len(ids), err)
	}
	for _, u := range []string{"owner", uids[1], uids[len(uids)-1]} {
		if _, ok := e.svc.Role(gid, u); !ok {
			t.Fatalf("%s not a member", u)
		}
	}
	var v viewBody
	e.do("GET", "/user/groups/"+gid, "", uids[5000]).decode(t, &v)
	if v.MemberCount != DefaultMaxGroupMembers || v.Members != nil {
		t.Fatalf("view: %d members, %d inline", v.MemberCount, len(v.Members))
	}
	// Every batch's event reached all members (off the request path):
	// an early member saw the creation and 9 batches, a late one 1 batch.
	e.svc.events.wait()
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if n := len(e.pub.events(uids[2])); n != 10 {
			return fmt.Errorf("%s got %d events", uids[2], n)
		}
		if n := len(e.pub.events(uids[len(uids)-1])); n != 1 {
			return fmt.Errorf("%s got %d events", uids[len(uids)-1], n)
		}
		return nil
	})
}

// bigGroup makes profiles "owner" and user00001.. and a group of n
// members owned by "owner" (created with 1,000, then batches of 1,000
// through HTTP). It returns the group ID followed by the member IDs.
func bigGroup(t testing.TB, e *env, n int) []string {
	uids := make([]string, n)
	uids[0] = "owner"
	for i := 1; i < n; i++ {
		uids[i] = fmt.Sprintf("user%05d", i)
	}
	for i := 0; i < n; i += 1000 {
		var cmds []fsm.Command
		for _, u := range uids[i:min(i+1000, n)] {
			b, _ := json.Marshal(profilePutCmd{UID: u, Create: true, DisplayName: &u})
			cmds = append(cmds, fsm.Command{Type: wire.CmdProfilePut, Payload: b})
		}
		rs, err := e.prop.ProposeBatch(context.Background(), cmds)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rs {
			if r.Err != nil {
				t.Fatal(r.Err)
			}
		}
	}
	g := e.createGroup("owner", "Big", uids[1:min(n, 1001)]...)
	for i := 1001; i < n; i += MaxMemberBatch {
		b, _ := json.Marshal(map[string]any{"uids": uids[i:min(i+MaxMemberBatch, n)]})
		if r := e.do("POST", "/user/groups/"+g.ID+"/members", string(b), "owner"); r.Code != 200 {
			t.Fatalf("batch at %d: %d %s", i, r.Code, r.Body)
		}
	}
	return append([]string{g.ID}, uids...)
}

// BenchmarkRole measures the membership check of a group publish; it
// must not grow with the group's size.
func BenchmarkRole(b *testing.B) {
	for _, size := range []int{10, 10000} {
		b.Run(fmt.Sprint(size), func(b *testing.B) {
			e := newEnvWith(b, func(d *Deps) { d.Publisher = nil })
			uids := bigGroup(b, e, size)
			gid, uids := uids[0], uids[1:]
			e.svc.Role(gid, "owner") // warm
			b.ReportAllocs()
			b.ResetTimer()
			i := 0
			for b.Loop() {
				if _, ok := e.svc.Role(gid, uids[i%len(uids)]); !ok {
					b.Fatal("not a member")
				}
				i++
			}
		})
	}
}

// BenchmarkIsBlocked measures the block check of every direct message
// (the recipient's block list, from the cache).
func BenchmarkIsBlocked(b *testing.B) {
	e := newEnvWith(b, func(d *Deps) { d.Publisher = nil })
	e.users("alice", "bob", "carol")
	if err := e.svc.Block(context.Background(), "bob", "carol"); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if e.svc.IsBlocked("bob", "alice") || !e.svc.IsBlocked("bob", "carol") {
			b.Fatal("wrong answer")
		}
	}
}
