package users

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/cluster/featurelevel"
	"github.com/edgechat/edgechat/cluster/fsm/fsmtest"
	"github.com/edgechat/edgechat/internal/wire"
)

// The rule that keeps a member who left a group of another region out
// until the home's state says it applied the leave (RemoteGroup.Leaves)
// changed what the FSM writes for the same commands: a node of the
// earlier version, applying the same log during a rolling upgrade, ends
// the pending leave with the first state that no longer lists the
// member, writes the pending leave without its seq, and stages the
// home's states without leaves. Below feature level LeaveSeqs every node
// applies the earlier rules, so that the nodes of one cluster keep one
// state; from it (level 1: every member runs a version that has the
// rule, which came with feature levels), the new rule.
func TestLeaveSeqsWaitForTheFeatureLevel(t *testing.T) {
	for _, level := range []uint32{0, featurelevel.LeaveSeqs, featurelevel.Supported} {
		e := newEnv(t)
		featurelevel.Register(e.prop.FSM)
		e.users("bob", "carl")
		e.svc.SetRegions(&leaveRegions{})
		ctx := context.Background()
		if _, err := e.prop.Propose(ctx, wire.CmdFeatureLevel, featurelevel.Payload(level)); err != nil {
			t.Fatal(err)
		}
		st := RemoteGroup{Group: Group{ID: "g1@us", Name: "Team", Owner: "owen@us"}, Members: []RemoteMember{
			{ID: "owen@us", Role: RoleOwner}, {ID: "bob", Role: RoleMember}, {ID: "carl", Role: RoleMember}}, Leaves: map[string]uint64{}}
		if err := e.svc.ApplyMirror(ctx, st); err != nil {
			t.Fatal(err)
		}
		if r := e.do(http.MethodDelete, "/user/groups/g1@us/members/bob", "", "bob"); r.Code != http.StatusNoContent {
			t.Fatalf("level %d: bob leaves: %d %s", level, r.Code, r.Body)
		}
		pending := fsmtest.Dump(t, e.db, prefixLeave)
		if v, ok := pending[prefixLeave+"g1@us/bob"]; !ok || (level < featurelevel.LeaveSeqs) != (v == "") {
			t.Errorf("level %d: the pending leave is %q (%v); an earlier version writes it empty", level, v, ok)
		}
		// The owner removed bob before his leave reached the home.
		st.Members = []RemoteMember{{ID: "owen@us", Role: RoleOwner}, {ID: "carl", Role: RoleMember}}
		if err := e.svc.ApplyMirror(ctx, st); err != nil {
			t.Fatal(err)
		}
		_, stillPending := fsmtest.Dump(t, e.db, prefixLeave)[prefixLeave+"g1@us/bob"]
		if want := level >= featurelevel.LeaveSeqs; stillPending != want {
			t.Errorf("level %d: after a state without bob whose leaves do not reach his leave, pending %v, want %v", level, stillPending, want)
		}
		// As a home: a group's state tells leaves only from the level on
		// (an earlier version's has no "leaves" at all).
		g := e.createGroup("carl", "Home")
		err := e.db.View(func(tx *badger.Txn) error {
			hs, _, err := GroupState(tx, g.ID)
			if err != nil {
				return err
			}
			b, err := json.Marshal(hs)
			if err != nil {
				return err
			}
			if told := strings.Contains(string(b), `"leaves"`); told != (level >= featurelevel.LeaveSeqs) {
				t.Errorf("level %d: a home's state %s", level, b)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}
