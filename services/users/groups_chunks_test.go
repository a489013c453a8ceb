package users

import (
	"context"
	"testing"
)

// A mirror's state in chunks changes the mirror only with the last
// chunk; a chunk 0 starts afresh (what a half-received state kept goes);
// a resent chunk is stored again in place.
func TestMirrorInChunks(t *testing.T) {
	e := newEnv(t)
	e.users("bob", "dan", "erin")
	ctx := context.Background()
	g := Group{ID: "g1@eu", Name: "Big", Owner: "owen@eu"}
	whole := RemoteGroup{Group: g, Members: []RemoteMember{{ID: "owen@eu", Role: RoleOwner}, {ID: "bob", Role: RoleMember}}}
	if err := e.svc.ApplyMirror(ctx, whole); err != nil {
		t.Fatal(err)
	}
	count := func(want int) {
		t.Helper()
		if got, err := e.svc.Group("g1@eu"); err != nil || got.MemberCount != want {
			t.Fatalf("mirror %+v %v, want %d members", got, err, want)
		}
	}
	part := func(i, n int, ids ...string) RemoteGroup {
		c := RemoteGroup{Group: g, Part: i, Parts: n}
		for _, id := range ids {
			c.Members = append(c.Members, RemoteMember{ID: id, Role: RoleMember})
		}
		return c
	}
	// A state begun (a stale chunk of carol@us included), then begun again.
	for _, c := range []RemoteGroup{part(0, 3, "carol@us", "xavi@us"), part(0, 3, "bob"), part(1, 3, "dan"), part(1, 3, "dan")} {
		if err := e.svc.ApplyMirror(ctx, c); err != nil {
			t.Fatal(err)
		}
		count(2) // unchanged until the last chunk
	}
	c := part(2, 3, "erin", "owen@eu")
	c.Members[1].Role = RoleOwner
	if err := e.svc.ApplyMirror(ctx, c); err != nil {
		t.Fatal(err)
	}
	count(4) // bob, dan, erin, owen@eu; not carol@us nor xavi@us
	if _, ok := e.svc.Role("g1@eu", "carol@us"); ok {
		t.Fatal("a member of a chunk 0 that was started over is in the mirror")
	}
	for _, uid := range []string{"bob", "dan", "erin"} {
		if _, ok := e.svc.Role("g1@eu", uid); !ok {
			t.Fatalf("%s not in the mirror", uid)
		}
	}
	// Nothing kept aside once applied: a next single-chunk state is whole.
	if err := e.svc.ApplyMirror(ctx, whole); err != nil {
		t.Fatal(err)
	}
	count(2)
	for _, bad := range []RemoteGroup{part(3, 3, "bob"), part(-1, 3, "bob"), {Group: g, Part: 0, Parts: 2, Members: []RemoteMember{{ID: "bob", Role: "boss"}}}} {
		if err := e.svc.ApplyMirror(ctx, bad); err == nil {
			t.Errorf("%+v applied", bad)
		}
	}
	count(2)
}
