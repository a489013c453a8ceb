package users

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strings"
	"testing"

	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/internal/wire"
)

// erase runs the users part of erasing uid in steps of budget writes.
func (e *env) erase(uid string, budget int) int {
	e.t.Helper()
	for steps := 1; steps < 10000; steps++ {
		tx := e.db.NewTransaction(true)
		done, after, err := e.svc.EraseAccount(tx, uid, fsm.NewBudget(budget))
		if err != nil {
			tx.Discard()
			e.t.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			e.t.Fatal(err)
		}
		after()
		if done {
			return steps
		}
	}
	e.t.Fatal("never done")
	return 0
}

func (e *env) newGroup(owner string, members ...string) string {
	e.t.Helper()
	b, _ := json.Marshal(map[string]any{"name": "g", "members": members})
	r := e.do("POST", "/user/groups", string(b), owner)
	if r.Code != 201 {
		e.t.Fatalf("create group: %d %s", r.Code, r.Body)
	}
	var g Group
	r.decode(e.t, &g)
	return g.ID
}

func TestEraseAccountProfileGraphAndGroups(t *testing.T) {
	e := newEnv(t)
	e.users("alice", "bob:Bobby", "carol", "dave")
	g1 := e.newGroup("bob", "alice", "carol", "dave")
	if r := e.do("POST", "/user/groups/"+g1+"/members", `{"uid":"dave","role":"admin"}`, "bob"); r.Code != 200 {
		t.Fatalf("dave admin: %d", r.Code)
	}
	g2 := e.newGroup("bob", "carol", "alice")
	g3 := e.newGroup("bob")
	g4 := e.newGroup("alice", "bob")
	for _, c := range []struct{ who, path, uid string }{
		{"bob", "/user/me/contacts", "alice"}, {"carol", "/user/me/contacts", "bob"},
		{"dave", "/user/me/blocks", "bob"}, {"bob", "/user/me/blocks", "carol"},
	} {
		if r := e.do("POST", c.path, fmt.Sprintf(`{"uid":%q}`, c.uid), c.who); r.Code != 201 {
			t.Fatalf("%s %s %s: %d %s", c.who, c.path, c.uid, r.Code, r.Body)
		}
	}
	// Warm the caches the erase must invalidate.
	if !e.svc.IsContact("carol", "bob") || !e.svc.IsBlocked("dave", "bob") {
		t.Fatal("setup")
	}
	if _, err := e.svc.Profile("bob"); err != nil {
		t.Fatal(err)
	}
	if gs, _ := e.svc.GroupsOf("bob"); len(gs) != 4 {
		t.Fatalf("bob's groups %v", gs)
	}

	if steps := e.erase("bob", 4); steps < 3 {
		t.Fatalf("a budget of 4 took %d steps", steps)
	}
	p, err := e.svc.Profile("bob")
	if err != nil || p.DisplayName != DeletedDisplayName || !p.Deleted || p.UserID != "bob" {
		t.Fatalf("bob's profile: %+v %v", p, err)
	}
	if found, _, err := e.svc.Search("bob", "", 10); err != nil || len(found) != 0 {
		t.Fatalf("search bob: %+v %v", found, err)
	}
	if found, _, err := e.svc.Search("Bobby", "", 10); err != nil || len(found) != 0 {
		t.Fatalf("search Bobby: %+v %v", found, err)
	}
	if e.svc.IsContact("carol", "bob") || e.svc.IsContact("bob", "alice") || e.svc.IsBlocked("dave", "bob") || e.svc.IsBlocked("bob", "carol") {
		t.Fatal("a contact or block naming bob is left")
	}
	if gs, _ := e.svc.GroupsOf("bob"); len(gs) != 0 {
		t.Fatalf("bob is still in %v", gs)
	}
	for _, c := range []struct {
		gid, owner string
		members    int
	}{{g1, "dave", 3}, {g2, "alice", 2}, {g3, "", 0}, {g4, "alice", 1}} {
		g, err := e.svc.Group(c.gid)
		if err != nil || g.Owner != c.owner || g.MemberCount != c.members {
			t.Errorf("group %s: %+v %v, want owner %q and %d members", c.gid, g, err, c.owner, c.members)
		}
		if _, ok := e.svc.Role(c.gid, "bob"); ok {
			t.Errorf("bob still has a role in %s", c.gid)
		}
		if c.owner != "" {
			if r, _ := e.svc.Role(c.gid, c.owner); r != RoleOwner {
				t.Errorf("%s's role in %s: %q", c.owner, c.gid, r)
			}
		}
	}
	// Nobody can add the erased user back.
	if r := e.do("POST", "/user/me/contacts", `{"uid":"bob"}`, "alice"); r.Code != 404 {
		t.Fatalf("adding bob as a contact: %d %s", r.Code, r.Body)
	}
	if r := e.do("POST", "/user/groups/"+g4+"/members", `{"uid":"bob"}`, "alice"); r.Code != 400 {
		t.Fatalf("adding bob to a group: %d %s", r.Code, r.Body)
	}
	// A step after the end writes nothing.
	before := e.state()
	e.erase("bob", 4)
	after := e.state()
	if len(before) != len(after) {
		t.Fatal("a step after the end changed the state")
	}
	for k, v := range before {
		if after[k] != v {
			t.Fatalf("%s changed", k)
		}
	}
}

// The owner is a user of the group's home: erasing the owner passes the
// group to a member of this region, never to one of another region
// (ann@us sorts before carol), who could neither manage it nor leave it.
func TestErasedOwnersGroupPassesToAMemberOfItsRegion(t *testing.T) {
	e := newEnv(t)
	e.users("owen", "carol")
	e.svc.SetRegions(fakeRegions{})
	gid := e.newGroup("owen", "ann@us", "carol")
	e.erase("owen", 1000)
	g, err := e.svc.Group(gid)
	if err != nil {
		t.Fatal(err)
	}
	if r, _ := e.svc.Role(gid, "carol"); g.Owner != "carol" || r != RoleOwner {
		t.Fatalf("after erasing owen the owner is %q (carol is %q), want carol", g.Owner, r)
	}
}

// A profile change proposed before the erase and committed after it (a
// PATCH /user/me through a node that had not yet applied the deletion,
// with --account-delete-grace 0) must not bring the erased user back:
// it made a profile that search listed and groups took as a member, for
// good (the erase was done).
func TestErasedProfileStaysErased(t *testing.T) {
	e := newEnv(t)
	e.users("alice", "bob:Bobby")
	e.erase("bob", 1000)
	name := "Bob Again"
	if _, err := e.svc.Update(context.Background(), "bob", &name, nil); !errors.Is(err, wire.ErrNotFound) {
		t.Errorf("updating the erased bob's profile: %v, want not found", err)
	}
	if err := e.svc.CreateProfile(context.Background(), "bob", "Bob"); err == nil {
		t.Errorf("creating a profile for the erased bob succeeded")
	}
	if p, err := e.svc.Profile("bob"); err != nil || !p.Deleted || p.DisplayName != DeletedDisplayName {
		t.Errorf("bob's profile: %+v %v, want the tombstone", p, err)
	}
	for _, q := range []string{"bob", "Bob"} {
		if found, _, err := e.svc.Search(q, "", 10); err != nil || len(found) != 0 {
			t.Errorf("search %q: %+v %v", q, found, err)
		}
	}
	if r := e.do("POST", "/user/groups", `{"name":"g","members":["bob"]}`, "alice"); r.Code != 400 || r.errCode() != CodeUnknownUsers {
		t.Errorf("a group with the erased bob: %d %s", r.Code, r.Body)
	}
}

// deletedAccounts is the auth service's set of deleted accounts, as the
// users service asks it.
type deletedAccounts map[string]bool

func (d deletedAccounts) Deleted(uid string) bool { return d[uid] }

// A deleted account (disabled at once, erased after the grace period)
// is an unknown user to whoever would add it: messages to it are
// refused as to an unknown user, so a group or a contact list must not
// take it either (it was listed as a member who never reads, until the
// erase silently took it out days later).
func TestDeletedAccountCannotBeAdded(t *testing.T) {
	e := newEnv(t)
	e.users("alice", "bob", "carol", "dora")
	e.svc.SetAccounts(deletedAccounts{"bob": true})
	g := e.createGroup("alice", "Team", "carol")
	before := e.state()
	for _, c := range []struct{ name, method, path, body string }{
		{"create a group with bob", "POST", "/user/groups", `{"name":"x","members":["carol","bob"]}`},
		{"add bob", "POST", "/user/groups/" + g.ID + "/members", `{"uid":"bob"}`},
		{"add bob among others", "POST", "/user/groups/" + g.ID + "/members", `{"uids":["bob","carol"],"role":"member"}`},
	} {
		if r := e.do(c.method, c.path, c.body, "alice"); r.Code != 400 || r.errCode() != CodeUnknownUsers || !strings.Contains(r.errMessage(), "bob") {
			t.Errorf("%s: %d %s, want 400 unknown_users naming bob", c.name, r.Code, r.Body)
		}
	}
	if r := e.do("POST", "/user/me/contacts", `{"uid":"bob"}`, "alice"); r.Code != 404 || r.errCode() != "not_found" {
		t.Errorf("bob as a contact: %d %s, want 404", r.Code, r.Body)
	}
	// The role rules answer first: a plain member is refused as such,
	// and for an outsider the group does not exist.
	if r := e.do("POST", "/user/groups/"+g.ID+"/members", `{"uid":"bob"}`, "carol"); r.Code != 403 {
		t.Errorf("carol, a member, adding bob: %d %s, want 403", r.Code, r.Body)
	}
	if r := e.do("POST", "/user/groups/"+g.ID+"/members", `{"uid":"bob"}`, "dora"); r.Code != 404 || r.errCode() != "not_found" {
		t.Errorf("dora, an outsider, adding bob: %d %s, want 404 not_found", r.Code, r.Body)
	}
	if after := e.state(); !maps.Equal(before, after) {
		t.Error("a refused addition changed the state")
	}
	// Others are unaffected; a member whose account was deleted since
	// can still have their role changed, and be removed.
	if r := e.do("POST", "/user/me/contacts", `{"uid":"carol"}`, "alice"); r.Code != 201 {
		t.Errorf("carol as a contact: %d %s", r.Code, r.Body)
	}
	e.svc.SetAccounts(nil)
	if r := e.do("POST", "/user/groups/"+g.ID+"/members", `{"uid":"bob","role":"admin"}`, "alice"); r.Code != 200 {
		t.Fatalf("adding bob before his deletion: %d %s", r.Code, r.Body)
	}
	e.svc.SetAccounts(deletedAccounts{"bob": true})
	if r := e.do("POST", "/user/groups/"+g.ID+"/owner", `{"uid":"bob"}`, "alice"); r.Code != 400 || r.errCode() != CodeUnknownUsers {
		t.Errorf("handing the group to the deleted bob: %d %s, want 400 unknown_users", r.Code, r.Body)
	}
	if r := e.do("POST", "/user/groups/"+g.ID+"/members", `{"uid":"bob","role":"member"}`, "alice"); r.Code != 200 {
		t.Errorf("revoking the deleted bob's admin role: %d %s", r.Code, r.Body)
	}
	if r := e.do("DELETE", "/user/groups/"+g.ID+"/members/bob", "", "alice"); r.Code != 204 {
		t.Errorf("removing the deleted bob: %d %s", r.Code, r.Body)
	}
}

// The Idempotency-Keys of the groups an account created go with it; a
// replay after the erase is not possible (the account is gone), and the
// keys of other users stay.
func TestEraseAccountDropsItsGroupKeys(t *testing.T) {
	e := newEnv(t)
	e.users("owen", "mia")
	for i, owner := range []string{"owen", "owen", "mia"} {
		r := e.do("POST", "/user/groups", fmt.Sprintf(`{"name":"g%d"}`, i), owner, "Idempotency-Key", fmt.Sprintf("k%d", i))
		if r.Code != 201 {
			t.Fatalf("create %d: %d %s", i, r.Code, r.Body)
		}
	}
	keys := func() []string {
		var out []string
		for k := range e.state() {
			if strings.HasPrefix(k, prefixGroupKey) {
				out = append(out, k)
			}
		}
		return out
	}
	if got := keys(); len(got) != 3 {
		t.Fatalf("key records before the erase: %v", got)
	}
	e.erase("owen", 1)
	if got := keys(); len(got) != 1 || got[0] != prefixGroupKey+"mia/k2" {
		t.Fatalf("key records after erasing owen: %v, want mia's only", got)
	}
}
