package users

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/internal/wire"
)

// A group of this region takes members of other regions (name@region,
// not checked here); the hook hears of every change inside its
// transaction and reads the regions with members there.
type fakeRegions struct{}

func (fakeRegions) Local() string             { return "eu" }
func (fakeRegions) Linked(region string) bool { return region == "us" || region == "ap" }

func TestRemoteMembersAndHook(t *testing.T) {
	e := newEnv(t)
	e.users("owen", "adam")
	// Without the region bridge, nobody of another region can be added.
	if r := e.do(http.MethodPost, "/user/groups", `{"name":"x","members":["bob@us"]}`, "owen"); r.Code != http.StatusBadRequest {
		t.Fatalf("bob@us without links: %d %s", r.Code, r.Body)
	}
	e.svc.SetRegions(fakeRegions{})
	for _, m := range []string{"bob@asia", "bob@", "Bad/x@us"} { // a region not linked, malformed
		if r := e.do(http.MethodPost, "/user/groups", `{"name":"x","members":["`+m+`"]}`, "owen"); r.Code != http.StatusBadRequest {
			t.Fatalf("%s: %d %s", m, r.Code, r.Body)
		}
	}
	var mu sync.Mutex
	var heard [][]string
	e.svc.SetGroupHook(func(tx *badger.Txn, gid string) (func(), error) {
		regions, err := MemberRegions(tx, gid)
		if err != nil {
			return nil, err
		}
		st, found, err := GroupState(tx, gid)
		if err != nil || !found || st.Group.ID != gid {
			t.Errorf("GroupState %+v %v %v", st, found, err)
		}
		return func() { mu.Lock(); heard = append(heard, regions); mu.Unlock() }, nil
	})
	v := e.createGroup("owen", "Team", "adam@eu", "bob@us", "carol@ap", "dan@us") // adam@eu is adam
	if v.MemberCount != 5 {
		t.Fatalf("created %+v", v)
	}
	if r, ok := e.svc.Role(v.ID, "bob@us"); !ok || r != RoleMember {
		t.Fatalf("bob@us: %s %v", r, ok)
	}
	if _, ok := e.svc.Role(v.ID, "adam"); !ok {
		t.Fatal("adam@eu was not taken for adam")
	}
	if r := e.do(http.MethodDelete, "/user/groups/"+v.ID+"/members/carol@ap", "", "owen"); r.Code != http.StatusNoContent {
		t.Fatalf("remove carol@ap: %d %s", r.Code, r.Body)
	}
	if r := e.do(http.MethodPost, "/user/groups/"+v.ID+"/members", `{"uid":"bob@"}`, "owen"); r.Code == http.StatusOK {
		t.Fatalf("a malformed remote member was added")
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.EqualFunc(heard, [][]string{{"ap", "us"}, {"us"}}, slices.Equal) {
		t.Fatalf("the hook heard %v", heard)
	}
}

// A mirror of another region's group is written whole from its home's
// state, read like any group, dropped when none of ours is left, and not
// changed here.
func TestGroupMirror(t *testing.T) {
	e := newEnv(t)
	e.users("bob", "dan")
	var rm removals
	e.svc.OnMemberRemoved(rm.add)
	ctx := context.Background()
	st := RemoteGroup{Group: Group{ID: "g1@eu", Name: "Team", Owner: "owen@eu"}, Members: []RemoteMember{
		{ID: "owen@eu", Role: RoleOwner}, {ID: "bob", Role: RoleMember}, {ID: "dan", Role: RoleAdmin}}}
	if err := e.svc.ApplyMirror(ctx, st); err != nil {
		t.Fatal(err)
	}
	if gs, _ := e.svc.GroupsOf("bob"); !slices.Equal(gs, []string{"g1@eu"}) {
		t.Fatalf("bob's groups %v", gs)
	}
	if g, err := e.svc.Group("g1@eu"); err != nil || g.MemberCount != 3 || g.Name != "Team" {
		t.Fatalf("mirror %+v %v", g, err)
	}
	// dan is an admin there, but the group changes only at home.
	if r := e.do(http.MethodPatch, "/user/groups/g1@eu", `{"name":"x"}`, "dan"); r.Code != http.StatusForbidden {
		t.Fatalf("PATCH of a mirror: %d %s", r.Code, r.Body)
	}
	st.Members = st.Members[:2] // dan left
	if err := e.svc.ApplyMirror(ctx, st); err != nil {
		t.Fatal(err)
	}
	if _, ok := e.svc.Role("g1@eu", "dan"); ok || !slices.Contains(rm.list(), "g1@eu/dan") {
		t.Fatalf("dan still a member (removals %v)", rm.list())
	}
	st.Members = st.Members[:1] // nobody of ours left: the mirror goes
	if err := e.svc.ApplyMirror(ctx, st); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Group("g1@eu"); !errors.Is(err, ErrNoGroup) {
		t.Fatalf("mirror kept: %v", err)
	}
	if gs, _ := e.svc.GroupsOf("bob"); len(gs) != 0 {
		t.Fatalf("bob's groups %v", gs)
	}
	for _, bad := range []RemoteGroup{
		{Group: Group{ID: "g1"}, Members: []RemoteMember{{ID: "bob", Role: RoleMember}}}, // not qualified
		{Group: Group{ID: "g1@eu"}, Members: []RemoteMember{{ID: "bob", Role: "boss"}}},
		{Group: Group{ID: "g1@eu"}, Members: []RemoteMember{{ID: "bob@", Role: RoleMember}}},
	} {
		if err := e.svc.ApplyMirror(ctx, bad); err == nil {
			t.Errorf("%+v applied", bad)
		}
	}
}

// Erasing an account that leaves a group of ours tells the hook too:
// the regions with members get the new state.
func TestEraseRunsGroupHook(t *testing.T) {
	e := newEnv(t)
	e.users("owen", "adam")
	e.svc.SetRegions(fakeRegions{})
	gid := e.newGroup("owen", "adam", "bob@us")
	var mu sync.Mutex
	var heard []string
	e.svc.SetGroupHook(func(tx *badger.Txn, g string) (func(), error) {
		st, _, err := GroupState(tx, g)
		if err != nil {
			return nil, err
		}
		var ids []string
		for _, m := range st.Members {
			ids = append(ids, m.ID)
		}
		return func() { mu.Lock(); heard = append(heard, g+":"+strings.Join(ids, ",")); mu.Unlock() }, nil
	})
	e.erase("adam", 100)
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(heard, []string{gid + ":bob@us,owen"}) {
		t.Fatalf("the hook heard %v", heard)
	}
}

// The owner is a user of the home: handing ownership to a member of
// another region is refused by that rule (403), not as if they were no
// member (404 not_a_member, "not a member of the group: bob@us" about a
// member the group lists); a member of this region named with its
// region (adam@eu) is that member, as when adding or removing.
func TestTransferToAMemberOfAnotherRegion(t *testing.T) {
	e := newEnv(t)
	e.users("owen", "adam")
	e.svc.SetRegions(fakeRegions{})
	g := e.createGroup("owen", "Team", "adam", "bob@us")
	before := e.state()
	r := e.do(http.MethodPost, "/user/groups/"+g.ID+"/owner", `{"uid":"bob@us"}`, "owen")
	if r.Code != http.StatusForbidden || r.errCode() != "forbidden" || !strings.Contains(r.errMessage(), "region") {
		t.Errorf("transfer to bob@us, a member of another region: %d %s, want 403 forbidden naming the rule", r.Code, r.Body)
	}
	if !maps.Equal(before, e.state()) {
		t.Fatal("the refused transfer changed the state")
	}
	// The FSM handler decides the same on committed state.
	b, _ := json.Marshal(groupOwnerCmd{GID: g.ID, By: "owen", UID: "bob@us"})
	if _, err := e.prop.Propose(context.Background(), wire.CmdGroupOwner, b); !errors.Is(err, wire.ErrForbidden) {
		t.Errorf("CmdGroupOwner to bob@us: %v, want a forbidden rule", err)
	}
	if r := e.do(http.MethodPost, "/user/groups/"+g.ID+"/owner", `{"uid":"adam@eu"}`, "owen"); r.Code != http.StatusOK {
		t.Fatalf("transfer to adam@eu (adam, of this region): %d %s", r.Code, r.Body)
	}
	if r, _ := e.svc.Role(g.ID, "adam"); r != RoleOwner {
		t.Fatalf("adam is %q after the transfer", r)
	}
}
