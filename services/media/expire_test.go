package media

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/snowflake"
	"github.com/edgechat/edgechat/internal/wire"
	"github.com/edgechat/edgechat/services/media/store"
)

// Retention's expiry of a direct conversation: a media whose every
// message there expired loses the grant and, with no grant left, is
// erased (nobody reads it, the sweeper deletes its files and record); a
// media re-sent in a newer message, or also sent to a group, stays
// readable there; a grant of the older layout (no message ID) counts as
// sent at the upload's creation; a note to oneself expires the same way.
func TestExpireRevokesOldGrantsAndErasesUngranted(t *testing.T) {
	e := newEnv(t, Config{Worker: true, SharedStore: true})
	ctx := context.Background()
	up := func(owner, name string) Record {
		r := e.upload(owner, name, name)
		e.svc.workOnce(ctx)
		return r
	}
	now := e.clock.Now()
	old, cutoff, newer := idAt(now.Add(time.Hour)), idAt(now.Add(2*time.Hour)), idAt(now.Add(3*time.Hour))
	gone, resent, grouped, legacy, note := up("alice", "gone.txt"), up("alice", "resent.txt"), up("alice", "grouped.txt"), up("alice", "legacy.txt"), up("alice", "note.txt")
	attach := func(id, peer, gid string, msg int) {
		t.Helper()
		ids := map[int]uint64{1: uint64(old), 3: uint64(newer)}
		m := wire.Media{ID: id}
		if err := e.svc.AttachSent(ctx, "alice", &m, peer, gid, idOf(ids[msg])); err != nil {
			t.Fatal(err)
		}
	}
	attach(gone.ID, "bob", "", 1)
	attach(resent.ID, "bob", "", 1)
	attach(resent.ID, "bob", "", 3) // a newer message carries it again
	attach(grouped.ID, "bob", "", 1)
	attach(grouped.ID, "", "team", 1)
	attach(note.ID, "alice", "", 1)
	// The older layout's grant: no message ID in the command or the value.
	if _, err := e.svc.propose(ctx, wire.CmdMediaGrant, grantCmd{ID: legacy.ID, Users: []string{"bob"}}); err != nil {
		t.Fatal(err)
	}
	if r := e.do("GET", "/media/"+legacy.ID, "bob", nil, nil); r.Code != 200 {
		t.Fatalf("bob reads the legacy grant's media: %d", r.Code)
	}
	res, err := e.svc.Expire(ctx, "alice", "bob", "", cutoff, []string{gone.ID, resent.ID, grouped.ID, legacy.ID})
	if err != nil || res.Revoked != 3 || res.Erased != 2 {
		t.Fatalf("expire alice:bob: %+v %v (want 3 revoked, 2 erased)", res, err)
	}
	if res, err := e.svc.Expire(ctx, "alice", "alice", "", cutoff, []string{note.ID}); err != nil || res.Revoked != 1 || res.Erased != 1 {
		t.Fatalf("expire the note to oneself: %+v %v", res, err)
	}
	for _, c := range []struct {
		id, who string
		code    int
	}{
		{gone.ID, "bob", 404}, {gone.ID, "alice", 404}, {legacy.ID, "bob", 404}, {note.ID, "alice", 404},
		{resent.ID, "bob", 200}, {resent.ID, "alice", 200},
		{grouped.ID, "bob", 404}, {grouped.ID, "carol", 200}, {grouped.ID, "alice", 200},
	} {
		if r := e.do("GET", "/media/"+c.id, c.who, nil, nil); r.Code != c.code {
			t.Errorf("%s reads %s: %d, want %d", c.who, c.id, r.Code, c.code)
		}
	}
	// Again: nothing more to do.
	if res, err := e.svc.Expire(ctx, "alice", "bob", "", cutoff, []string{gone.ID, resent.ID, grouped.ID, legacy.ID}); err != nil || res != (ExpireResult{}) {
		t.Fatalf("second expire: %+v %v", res, err)
	}
	e.svc.Sweep(ctx)
	for _, id := range []string{gone.ID, legacy.ID, note.ID} {
		if _, err := e.svc.Get(id); !errors.Is(err, ErrNotFound) {
			t.Errorf("record %s after the sweep: %v", id, err)
		}
		for _, tier := range []store.Tier{store.TierRaw, store.TierProcessed, store.TierCold} {
			if e.st.has(tier, id) {
				t.Errorf("file %s left in %s", id, tier)
			}
		}
	}
	for _, id := range []string{resent.ID, grouped.ID} {
		if r, err := e.svc.Get(id); err != nil || r.Erased || !e.st.has(store.TierProcessed, id) {
			t.Errorf("%s after the sweep: %+v %v", id, r, err)
		}
	}
	// A later cutoff expires the re-sent one too; the group's expiry its group grant.
	if res, err := e.svc.Expire(ctx, "alice", "bob", "", idAt(now.Add(4*time.Hour)), []string{resent.ID}); err != nil || res.Erased != 1 {
		t.Fatalf("expire after the newer message: %+v %v", res, err)
	}
	if res, err := e.svc.Expire(ctx, "", "", "team", cutoff, []string{grouped.ID}); err != nil || res.Erased != 1 {
		t.Fatalf("expire the group: %+v %v", res, err)
	}
}

// A malformed expiry is refused.
func TestExpireRefusals(t *testing.T) {
	e := newEnv(t, Config{})
	ctx := context.Background()
	for name, c := range map[string]expireCmd{
		"no cutoff": {Users: []string{"a", "b"}, IDs: []string{"aaaaaaaaaaaaaaaaaaaaaaaa"}},
		"one user":  {Users: []string{"a"}, Cutoff: 5},
		"both":      {Users: []string{"a", "b"}, Group: "team", Cutoff: 5},
		"bad group": {Group: "te/am", Cutoff: 5},
		"bad id":    {Users: []string{"a", "b"}, Cutoff: 5, IDs: []string{"x"}},
		"bad user":  {Users: []string{"a", "b/c"}, Cutoff: 5},
		"too many":  {Users: []string{"a", "b"}, Cutoff: 5, IDs: make([]string, expireBatch+1)},
	} {
		if _, err := e.svc.propose(ctx, wire.CmdMediaExpire, c); !errors.Is(err, errBadCommand) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func idOf(n uint64) snowflake.ID { return snowflake.ID(n) }
