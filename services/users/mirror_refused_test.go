package users

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/cluster/fsm/fsmtest"
	"github.com/edgechat/edgechat/internal/wire"
)

// leaveRegions is fakeRegions (this region eu) with a leave stager:
// each leave is the next seq of the home's outbox.
type leaveRegions struct {
	fakeRegions
	seq uint64
}

func (r *leaveRegions) StageGroupLeave(*badger.Txn, string, string) (uint64, func(), error) {
	r.seq++
	return r.seq, nil, nil
}

// A state of a mirror that the FSM refuses (a member with a role this
// version does not know, as a home of a later version may send) changes
// nothing: applyMirrorState ended the pending leaves the state said were
// applied before it checked the members, and the refusal kept those
// deletions (the handler's error does not undo its writes), so bob's
// leave, which the home had not applied, was forgotten and the home's
// next state, still listing him, put him back in the group he left.
func TestARefusedMirrorStateKeepsThePendingLeaves(t *testing.T) {
	e := newEnv(t)
	e.users("bob")
	e.svc.SetRegions(&leaveRegions{})
	ctx := context.Background()
	st := RemoteGroup{Group: Group{ID: "g1@us", Name: "Team", Owner: "owen@us"}, Members: []RemoteMember{
		{ID: "owen@us", Role: RoleOwner}, {ID: "bob", Role: RoleMember}}}
	if err := e.svc.ApplyMirror(ctx, st); err != nil {
		t.Fatal(err)
	}
	if r := e.do(http.MethodDelete, "/user/groups/g1@us/members/bob", "", "bob"); r.Code != http.StatusNoContent {
		t.Fatalf("bob leaves: %d %s", r.Code, r.Body)
	}
	before := fsmtest.Dump(t, e.db, prefixLeave)
	if len(before) != 1 {
		t.Fatalf("pending leaves after bob's leave: %v", before)
	}
	// A state of a home of an earlier version (no leaves) without bob,
	// but with a member whose role this node refuses.
	bad := RemoteGroup{Group: st.Group, Members: []RemoteMember{{ID: "owen@us", Role: RoleOwner}, {ID: "dan@us", Role: "moderator"}}}
	if err := e.svc.ApplyMirror(ctx, bad); err == nil {
		t.Fatal("a state with an unknown role was taken")
	}
	if after := fsmtest.Dump(t, e.db, prefixLeave); len(after) != len(before) {
		t.Fatalf("pending leaves after a refused state: %v, want %v as before it", after, before)
	}
	// The home's next state still lists bob (it has not applied his
	// leave yet): he stays out.
	if err := e.svc.ApplyMirror(ctx, st); err != nil {
		t.Fatal(err)
	}
	if r, ok := e.svc.Role("g1@us", "bob"); ok {
		t.Fatalf("bob, who left, is back in the group as %s", r)
	}
}

// A leave a link brought that the FSM refuses (here a malformed command:
// no member cap) keeps no seq: it wrote the link's seq before applying
// the removal, and the FSM commits what a handler wrote before its
// error, so the refusal was kept as the last leave applied (a node of
// the earlier version keeps none, and the home's states would tell the
// member's region a leave applied that was not).
func TestARefusedLinkLeaveKeepsNoSeq(t *testing.T) {
	e := newEnv(t)
	e.users("owen")
	e.svc.SetRegions(fakeRegions{})
	g := e.createGroup("owen", "Team", "bob@us")
	b, _ := json.Marshal(groupMemberCmd{GID: g.ID, By: "bob@us", UIDs: []string{"bob@us"}, Remove: true, Max: 0, Seq: 5})
	if _, err := e.prop.Propose(context.Background(), wire.CmdGroupMember, b); err == nil {
		t.Fatal("a link leave without a member cap was applied")
	}
	if seqs := fsmtest.Dump(t, e.db, prefixLeaveSeq); len(seqs) != 0 {
		t.Fatalf("a refused leave kept its seq: %v", seqs)
	}
	if r, ok := e.svc.Role(g.ID, "bob@us"); !ok || r != RoleMember {
		t.Fatalf("bob@us: %s %v", r, ok)
	}
}
