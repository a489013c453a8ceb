package region_test

import (
	"net/http"
	"testing"
)

// Members of another region get the group events the home's members
// get, produced in their region from the mirror's changes, with the
// group and the users as their region names them: created, members
// added (one, then several), a role changed, the owner transferred (one
// owner_changed, not two role changes), removed (the removed member gets
// it too), renamed.
func TestGroupEventsAcrossRegions(t *testing.T) {
	eu, us := startRegions(t, 1, "eu", "us", nil)
	aliceTok := eu.newUser(t, "alice")
	eu.newUser(t, "carol")
	bobTok, daveTok, erinTok := us.newUser(t, "bob"), us.newUser(t, "dave"), us.newUser(t, "erin")
	alice := connect(t, eu.nodes[0], "alice", "phone", aliceTok)
	alice.MustSub(t, "user/alice/events")
	bob := connect(t, us.nodes[0], "bob", "phone", bobTok)
	bob.MustSub(t, "user/bob/events")
	dave := connect(t, us.nodes[0], "dave", "phone", daveTok)
	dave.MustSub(t, "user/dave/events")

	g := newGroup(t, eu.nodes[0], aliceTok, "events", "bob@us")
	gid, mirror := g.GroupID, g.GroupID+"@eu"
	type want struct{ typ, uid, role, by, name string }
	check := func(who string, e groupEvent, gid string, w want) {
		t.Helper()
		if e.Type != w.typ || e.Data.GID != gid || e.Data.UID != w.uid || e.Data.Role != w.role || e.Data.By != w.by || e.Data.Name != w.name {
			t.Fatalf("%s got %v, want %+v", who, e, w)
		}
	}
	check("alice", nextEvent(t, alice, "alice"), gid, want{"group.created", "", "", "alice", "events"})
	check("bob", nextEvent(t, bob, "bob"), mirror, want{"group.created", "", "", "alice@eu", "events"})

	step := func(method, path string, body any, code int) {
		t.Helper()
		if got := call(t, eu.nodes[0], aliceTok, method, "/user/groups/"+gid+path, body, nil); got != code {
			t.Fatalf("%s %s: %d, want %d", method, path, got, code)
		}
	}
	step("POST", "/members", map[string]any{"uid": "dave@us"}, http.StatusOK)
	check("alice", nextEvent(t, alice, "alice"), gid, want{"group.member_added", "dave@us", "member", "alice", ""})
	check("bob", nextEvent(t, bob, "bob"), mirror, want{"group.member_added", "dave", "member", "alice@eu", ""})
	check("dave", nextEvent(t, dave, "dave"), mirror, want{"group.member_added", "dave", "member", "alice@eu", ""})

	step("POST", "/members", map[string]any{"uids": []string{"carol", "erin@us"}}, http.StatusOK)
	for _, c := range []struct {
		who  string
		e    groupEvent
		gid  string
		uids []string
	}{{"alice", nextEvent(t, alice, "alice"), gid, []string{"carol", "erin@us"}},
		{"bob", nextEvent(t, bob, "bob"), mirror, []string{"carol@eu", "erin"}}} {
		if c.e.Type != "group.member_added" || c.e.Data.GID != c.gid || len(c.e.Data.UIDs) != 2 || c.e.Data.UIDs[0] != c.uids[0] || c.e.Data.UIDs[1] != c.uids[1] {
			t.Fatalf("%s got %v, want %v added", c.who, c.e, c.uids)
		}
	}
	if e := nextEvent(t, dave, "dave"); e.Type != "group.member_added" || len(e.Data.UIDs) != 2 {
		t.Fatalf("dave got %v", e)
	}

	step("POST", "/members", map[string]any{"uid": "bob@us", "role": "admin"}, http.StatusOK)
	check("alice", nextEvent(t, alice, "alice"), gid, want{"group.role_changed", "bob@us", "admin", "alice", ""})
	check("bob", nextEvent(t, bob, "bob"), mirror, want{"group.role_changed", "bob", "admin", "alice@eu", ""})

	step("POST", "/owner", map[string]any{"uid": "carol"}, http.StatusOK)
	check("alice", nextEvent(t, alice, "alice"), gid, want{"group.owner_changed", "carol", "owner", "alice", ""})
	check("bob", nextEvent(t, bob, "bob"), mirror, want{"group.owner_changed", "carol@eu", "owner", "alice@eu", ""})

	step("DELETE", "/members/dave@us", nil, http.StatusNoContent)
	check("alice", nextEvent(t, alice, "alice"), gid, want{"group.member_removed", "dave@us", "", "alice", ""})
	check("bob", nextEvent(t, bob, "bob"), mirror, want{"group.member_removed", "dave", "", "alice@eu", ""})
	check("dave", nextEvent(t, dave, "dave"), mirror, want{"group.role_changed", "bob", "admin", "alice@eu", ""})
	check("dave", nextEvent(t, dave, "dave"), mirror, want{"group.owner_changed", "carol@eu", "owner", "alice@eu", ""})
	check("dave", nextEvent(t, dave, "dave"), mirror, want{"group.member_removed", "dave", "", "alice@eu", ""})

	step("PATCH", "", map[string]any{"name": "renamed"}, http.StatusOK)
	check("alice", nextEvent(t, alice, "alice"), gid, want{"group.updated", "", "", "alice", "renamed"})
	check("bob", nextEvent(t, bob, "bob"), mirror, want{"group.updated", "", "", "alice@eu", "renamed"})
	// The mirror publishes a change's events to its members one after
	// another (bob, then erin): bob's event of the next change is what
	// says erin's of the rename went out, before she connects. (Connecting
	// right after bob's rename raced its publish to her.)
	step("PATCH", "", map[string]any{"description": "about"}, http.StatusOK)
	check("alice", nextEvent(t, alice, "alice"), gid, want{"group.updated", "", "", "alice", ""})
	check("bob", nextEvent(t, bob, "bob"), mirror, want{"group.updated", "", "", "alice@eu", ""})
	erin := connect(t, us.nodes[0], "erin", "phone", erinTok)
	erin.MustSub(t, "user/erin/events")
	step("PATCH", "", map[string]any{"description": "about us"}, http.StatusOK)
	check("erin", nextEvent(t, erin, "erin"), mirror, want{"group.updated", "", "", "alice@eu", ""})
	if m, ok := dave.TryNext(); ok {
		t.Fatalf("dave, no longer a member, got %s", m.Payload)
	}
}
