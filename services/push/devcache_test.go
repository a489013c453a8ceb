package push

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/cluster/fsm/fsmtest"
)

// Devices answers from a cache (the push sender reads a user's
// registrations twice per message): every change of a user's devices is
// seen by the next read, on the leader and on a follower, also of the
// user a token moved away from (pushing the old holder's cached token
// would carry the message to whoever holds it now), after an account's
// erasure and after a snapshot restore.
func TestDevicesSeesEveryChangeThroughItsCache(t *testing.T) {
	e := newEnv(t, PlatformFCM, PlatformAPNs)
	f := e.prop.NewFollower(t)
	fsvc, err := New(Deps{DB: f.DB(), Proposer: e.prop, FSM: f})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	check := func(step, uid string, want ...string) {
		t.Helper()
		for i := range 2 { // the second read is the cache's
			for node, svc := range map[string]*Service{"leader": e.svc, "follower": fsvc} {
				if got := deviceNames(t, svc, uid); !slices.Equal(got, want) {
					t.Fatalf("%s: %s's devices on the %s (read %d): %q, want %q", step, uid, node, i+1, got, want)
				}
			}
		}
	}
	register := func(uid, device, token string) {
		t.Helper()
		if _, err := e.svc.Register(ctx, uid, Registration{Device: device, Platform: PlatformFCM, Token: token}); err != nil {
			t.Fatal(err)
		}
	}
	tokA, tokB, tokC := fcmToken("a"), fcmToken("b"), fcmToken("c")
	check("nothing registered", "alice")
	register("alice", "pixel", tokA)
	check("registered", "alice", "pixel "+tokA)
	register("alice", "pixel", tokB) // a new token for the same device
	check("new token", "alice", "pixel "+tokB)
	register("alice", "tablet", tokC)
	check("second device", "alice", "pixel "+tokB, "tablet "+tokC)
	check("bob before", "bob")
	register("bob", "phone", tokC) // the tablet's token moves to bob's phone
	check("token moved away", "alice", "pixel "+tokB)
	check("token moved to", "bob", "phone "+tokC)
	if err := e.svc.Unregister(ctx, "alice", "pixel"); err != nil {
		t.Fatal(err)
	}
	check("unregistered", "alice")
	register("alice", "pixel", tokA)
	check("registered again", "alice", "pixel "+tokA)
	if err := e.svc.RemoveToken(ctx, "alice", PlatformFCM, tokA); err != nil {
		t.Fatal(err)
	}
	check("dead token removed", "alice")

	// An erasure step (auth's command) runs its after-commit function.
	register("alice", "pixel", tokA)
	check("before erasure", "alice", "pixel "+tokA)
	eraseOnEach(t, "alice", e.svc, fsvc)
	check("erased", "alice")

	// A restore replaces every registration: a node whose state is
	// behind the snapshot takes it over what it has cached.
	snap := fsmtest.Snapshot(t, e.prop.FSM)
	other := newEnv(t, PlatformFCM)
	if _, err := other.svc.Register(ctx, "carol", Registration{Device: "phone", Platform: PlatformFCM, Token: fcmToken("d")}); err != nil {
		t.Fatal(err)
	}
	for _, uid := range []string{"carol", "bob"} {
		if _, err := other.svc.Devices(uid); err != nil { // cached
			t.Fatal(err)
		}
	}
	fsmtest.Restore(t, other.prop.FSM, snap)
	for uid, want := range map[string][]string{"carol": nil, "bob": {"phone " + tokC}} {
		if got := deviceNames(t, other.svc, uid); !slices.Equal(got, want) {
			t.Fatalf("after a restore: %s's devices %q, want %q", uid, got, want)
		}
	}
}

// The cache holds no value read before an invalidation: a load that
// raced with a commit is not kept.
func TestDeviceCacheDropsALoadThatRacedAnInvalidation(t *testing.T) {
	var c deviceCache
	_, gen, ok := c.get("alice")
	if ok {
		t.Fatal("empty cache hit")
	}
	c.drop("alice") // a commit's invalidation while the load read the database
	c.put("alice", []Device{{Device: "stale"}}, gen)
	if ds, _, ok := c.get("alice"); ok {
		t.Fatalf("a load older than the invalidation was cached: %v", ds)
	}
	for i := range devicesCacheSize + 10 {
		_, gen, _ := c.get(fmt.Sprint("u", i))
		c.put(fmt.Sprint("u", i), nil, gen)
	}
	if n := len(c.m); n != devicesCacheSize {
		t.Fatalf("%d users cached, want the bound %d", n, devicesCacheSize)
	}
}

// deviceNames reads uid's devices from svc as "device token" lines.
func deviceNames(t *testing.T, svc *Service, uid string) []string {
	t.Helper()
	ds, err := svc.Devices(uid)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, d := range ds {
		got = append(got, d.Device+" "+d.Token)
	}
	return got
}

// eraseOnEach runs a whole erasure step of uid (auth's command) on each
// node's service, with its after-commit function, as the FSM does.
func eraseOnEach(t *testing.T, uid string, svcs ...*Service) {
	t.Helper()
	for _, svc := range svcs {
		tx := svc.db.NewTransaction(true)
		done, after, err := svc.EraseAccount(tx, uid, fsm.NewBudget(100))
		if err != nil || !done {
			t.Fatalf("erase: %v %v", done, err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		after()
	}
}
