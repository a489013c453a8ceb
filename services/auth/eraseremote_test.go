package auth

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/edgechat/edgechat/cluster/fsm/fsmtest"
	"github.com/edgechat/edgechat/internal/wire"
)

// bob@us was erased in us and us's link told this region: one decision
// (CmdRemoteErase), due at once whatever the grace, then the sweeper's
// steps give the erasers the qualified ID until they are done; the
// record stays (Deleted: messages to and from him are refused). A
// second notice changes nothing; anything but a user of another region
// is refused for good.
func TestEraseRemoteErasesAUserOfAnotherRegion(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.DeleteGrace = time.Hour })
	e.svc.AddEraser("test", testEraser)
	seedTestKeys(t, e.db, "bob@us", 5000) // more than one step's budget
	seedTestKeys(t, e.db, "bob", 3)       // a local bob is someone else
	ctx := context.Background()

	for _, bad := range []string{"bob", "bob@", "@us", "b/b@us", ""} {
		if err := e.svc.EraseRemote(ctx, bad); !errors.Is(err, wire.ErrInvalid) {
			t.Errorf("EraseRemote(%q) = %v, want invalid", bad, err)
		}
	}
	if err := e.svc.EraseRemote(ctx, "bob@us"); err != nil {
		t.Fatal(err)
	}
	if !e.svc.Deleted("bob@us") || !e.svc.ErasureDue("bob@us") {
		t.Fatal("bob@us is not deleted and due at once")
	}
	before := fsmtest.Dump(t, e.db, "r/auth/")
	if err := e.svc.EraseRemote(ctx, "bob@us"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.prop.Propose(ctx, wire.CmdRemoteErase, mustJSON(t, remoteEraseCmd{V: 1, UID: "bob@us", At: e.clock.Now()})); err != nil {
		t.Fatal(err)
	}
	if after := fsmtest.Dump(t, e.db, "r/auth/"); len(after) != len(before) || after[prefixGone+"bob@us"] != before[prefixGone+"bob@us"] {
		t.Fatal("a second erasure of bob@us changed the decision")
	}

	// A restart (the set read again from the store) finds it pending.
	if err := e.svc.gone.load(e.db); err != nil {
		t.Fatal(err)
	}
	e.svc.EraseDue(ctx)
	if n := len(fsmtest.Dump(t, e.db, "r/test/bob@us/")); n != 0 {
		t.Fatalf("%d keys of bob@us left", n)
	}
	if n := len(fsmtest.Dump(t, e.db, "r/test/bob/")); n != 3 {
		t.Fatalf("the local bob's keys: %d", n)
	}
	if g, ok := e.svc.gone.get("bob@us"); !ok || g.ErasedAt == nil {
		t.Fatalf("record %+v %v", g, ok)
	}
	if !e.svc.Deleted("bob@us") {
		t.Fatal("bob@us is no longer deleted once erased")
	}
}
