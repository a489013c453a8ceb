package media

import (
	"context"
	"testing"

	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/internal/wire"
	"github.com/edgechat/edgechat/services/media/store"
)

func TestEraseAccountDropsDirectUploadsKeepsGroupOnes(t *testing.T) {
	e := newEnv(t, Config{Worker: true, SharedStore: true})
	ctx := context.Background()
	up := func(owner, name string) Record {
		r := e.upload(owner, name, name)
		e.svc.workOnce(ctx)
		return r
	}
	direct, group, unsent := up("bob", "direct.txt"), up("bob", "group.txt"), up("bob", "unsent.txt")
	alices := up("alice", "alices.txt")
	if err := e.svc.Attach(ctx, "bob", &wire.Media{ID: direct.ID}, "alice", ""); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.Attach(ctx, "bob", &wire.Media{ID: group.ID}, "", "team"); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.Attach(ctx, "alice", &wire.Media{ID: alices.ID}, "bob", ""); err != nil {
		t.Fatal(err)
	}
	for done, steps := false, 0; !done; steps++ {
		if steps > 100 {
			t.Fatal("never done")
		}
		tx := e.prop.DB.NewTransaction(true)
		var err error
		if done, _, err = e.svc.EraseAccount(tx, "bob", fsm.NewBudget(1)); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	// At once: nobody reads bob's direct and unsent uploads, nor bob alice's.
	for _, c := range []struct {
		id, who string
		code    int
	}{{direct.ID, "alice", 404}, {unsent.ID, "bob", 404}, {alices.ID, "bob", 404}, {alices.ID, "alice", 200}, {group.ID, "carol", 200}} {
		if r := e.do("GET", "/media/"+c.id, c.who, nil, nil); r.Code != c.code {
			t.Errorf("%s reads %s: %d, want %d", c.who, c.id, r.Code, c.code)
		}
	}
	e.svc.Sweep(ctx)
	for _, id := range []string{direct.ID, unsent.ID} {
		if _, err := e.svc.Get(id); err == nil {
			t.Errorf("record %s left after the sweep", id)
		}
		for _, tier := range []store.Tier{store.TierRaw, store.TierProcessed, store.TierCold} {
			if e.st.has(tier, id) {
				t.Errorf("file %s left in %s", id, tier)
			}
		}
	}
	if r, err := e.svc.Get(group.ID); err != nil || r.Erased || !e.st.has(store.TierProcessed, group.ID) {
		t.Fatalf("the group's upload: %+v %v", r, err)
	}
}
