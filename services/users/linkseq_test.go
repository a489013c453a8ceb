package users

import (
	"context"
	"errors"
	"testing"
)

// A state (or chunk) of a mirror at or below the seq of the last one
// applied is a link's resend: skipped, also once the mirror went, and in
// the middle of a state in chunks. A state without seq (a home of an
// earlier version) is applied as before.
func TestMirrorSkipsResentStates(t *testing.T) {
	e := newEnv(t)
	e.users("bob", "dan", "erin")
	ctx := context.Background()
	g := Group{ID: "g1@eu", Name: "Team", Owner: "owen@eu"}
	state := func(seq uint64, part, parts int, ids ...string) RemoteGroup {
		st := RemoteGroup{Group: g, Seq: seq, Part: part, Parts: parts}
		for _, id := range ids {
			r := RoleMember
			if id == "owen@eu" {
				r = RoleOwner
			}
			st.Members = append(st.Members, RemoteMember{ID: id, Role: r})
		}
		return st
	}
	apply := func(sts ...RemoteGroup) {
		t.Helper()
		for _, st := range sts {
			if err := e.svc.ApplyMirror(ctx, st); err != nil {
				t.Fatalf("%+v: %v", st, err)
			}
		}
	}
	count := func(step string, want int) {
		t.Helper()
		got, err := e.svc.Group("g1@eu")
		if want == 0 && errors.Is(err, ErrNoGroup) {
			return
		}
		if err != nil || got.MemberCount != want {
			t.Fatalf("%s: mirror %+v %v, want %d members", step, got, err, want)
		}
	}
	apply(state(1, 0, 0, "owen@eu", "bob"), state(2, 0, 0, "owen@eu", "bob", "dan"))
	count("applied", 3)
	apply(state(1, 0, 0, "owen@eu", "bob"))
	count("an older state resent", 3)
	apply(state(3, 0, 0, "owen@eu"), state(2, 0, 0, "owen@eu", "bob", "dan"))
	count("gone, then an older state resent", 0)
	apply(state(4, 0, 2, "bob"), state(5, 1, 2, "dan", "owen@eu"))
	count("in chunks", 3)
	apply(state(4, 0, 2, "bob"), state(5, 1, 2, "dan", "owen@eu"))
	count("chunks resent", 3)
	// A state half sent (chunk 0 committed), then sent again from it.
	apply(state(6, 0, 2, "erin"), state(6, 0, 2, "erin"), state(7, 1, 2, "owen@eu"))
	count("chunks resent from the first", 2)
	if _, ok := e.svc.Role("g1@eu", "erin"); !ok {
		t.Fatal("erin, of the first chunk, is not in the mirror")
	}
	apply(state(0, 0, 0, "owen@eu", "bob", "dan", "erin"))
	count("without seq", 4)
}
