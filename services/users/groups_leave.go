package users

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/cluster/featurelevel"
	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/internal/address"
	"github.com/edgechat/edgechat/internal/httpapi"
	"github.com/edgechat/edgechat/internal/wire"
)

// A member of this region leaves a group of another region (issue 14):
// bob in us sends DELETE /user/groups/k3x9@eu/members/bob, the endpoint
// a local member leaves by. Only the home changes a group, so the leave
// is a request to the home, durable like a message: CmdGroupLeave
// removes bob from this region's mirror at once and, in the same
// transaction, stages the request in the home's link outbox
// (LeaveStager, bridge/region). The home commits the removal when the
// request arrives (LeaveRemote) and ships the group's new state as for
// any change.
//
// What bob sees until then: he is out at once in his region (204, like
// a local leave; the mirror no longer lists him, his subscriptions to
// the group's topics are dropped, messages the home sent before it got
// his request are not delivered to him), and he stays out: the request
// is kept as a pending leave, and a state of the group that still lists
// him (sent by the home before it got the request) does not bring him
// back. The pending leave ends with the first state of the home that
// says it has applied the request (RemoteGroup.Leaves: the seq of the
// last leave of this region it applied, at or above the request's): a
// state sent before, even one without him (the owner removed him) or
// listing him again (the owner removed him and added him again before
// the request arrived), does not end it, and he stays out; the request
// then removes him at home, so both regions end with him out (his leave
// wins over changes the home made before it heard of it). A home of an
// earlier version tells no leaves: there the pending leave ends with
// the first state that no longer lists him, as before. The home may
// have removed him already: the request is then nothing to do.

// prefixLeave keys the pending leaves of this region's users:
// gid@home/uid → the request's seq on the link (8 bytes; empty: written
// by an earlier version, not known).
const prefixLeave = "r/user/gl/"

// LeaveStager stages a member's request to leave a group of another
// region in the home's link outbox, inside the FSM transaction (the
// region bridge); the function returned wakes the link after the commit.
type LeaveStager interface {
	// seq is the request's place in the home's outbox (its seq on the
	// link, from 1).
	StageGroupLeave(tx *badger.Txn, gid, uid string) (seq uint64, after func(), err error)
}

type groupLeaveCmd struct {
	GID string `json:"gid"` // gid@home
	UID string `json:"uid"` // a user of this region
}

func (s *Service) applyGroupLeave(tx *badger.Txn, _ fsm.Position, payload []byte) (any, error) {
	var c groupLeaveCmd
	if err := json.Unmarshal(payload, &c); err != nil {
		return nil, fmt.Errorf("%w: %v", errBadCommand, err)
	}
	if wire.ValidGroupID(c.GID) != nil || address.RegionOf(c.GID) == "" || wire.ValidUserID(c.UID) != nil {
		return nil, fmt.Errorf("%w: leave %q of %q", errBadCommand, c.UID, c.GID)
	}
	s.mu.RLock()
	stager, _ := s.regions.(LeaveStager)
	s.mu.RUnlock()
	if stager == nil {
		return nil, forbidden("group %s lives in another region: change it there", c.GID)
	}
	g, found, err := readGroup(tx, c.GID)
	if err != nil {
		return nil, err
	}
	role := Role("")
	if found {
		if role, err = readRole(tx, c.GID, c.UID); err != nil {
			return nil, err
		}
	}
	switch {
	case role == "":
		return nil, ErrNoGroup
	case role == RoleOwner:
		return nil, ErrOwnerMustTransfer
	}
	inv := invalidation{groups: []string{c.GID}, userGroups: []string{c.UID}, removed: []memberRef{{gid: c.GID, uid: c.UID}}}
	if err := dropMember(tx, c.GID, c.UID); err != nil {
		return nil, err
	}
	g.MemberCount--
	if err := writeGroup(tx, g); err != nil {
		return nil, err
	}
	seq, after, err := stager.StageGroupLeave(tx, c.GID, c.UID)
	if err != nil {
		return nil, err
	}
	// Below feature level LeaveSeqs the pending leave is written as a
	// node of an earlier version writes it, without its seq (and ends as
	// it ends it: applyMirrorState).
	var v []byte
	if seqs, err := featurelevel.AtLeast(tx, featurelevel.LeaveSeqs); err != nil {
		return nil, err
	} else if seqs {
		v = binary.BigEndian.AppendUint64(nil, seq)
	}
	if err := tx.Set([]byte(prefixLeave+c.GID+"/"+c.UID), v); err != nil {
		return nil, err
	}
	return &applied{s: s, value: memberChange{Group: g, Changes: []roleChange{{UID: c.UID, From: role}}}, inv: inv, after: after}, nil
}

// pendingLeaves reads the pending leaves of mirror gid: uid → the
// request's seq (0: not known).
func pendingLeaves(tx *badger.Txn, gid string) (map[string]uint64, error) {
	out := map[string]uint64{}
	_, err := scan(tx, prefixLeave+gid+"/", "", "", true, func(uid string, v []byte) (bool, error) {
		out[uid] = 0
		if len(v) == 8 {
			out[uid] = binary.BigEndian.Uint64(v)
		}
		return false, nil
	})
	return out, err
}

// leaveApplied tells whether state c of a mirror shows the home has
// applied the pending leave of uid (seq, this region local): c tells the
// last leave of local it applied (Leaves) at or above seq; a home that
// tells no leaves (an earlier version), or a leave whose seq is not
// known: c no longer lists uid.
func leaveApplied(c RemoteGroup, local, uid string, seq uint64) bool {
	if c.Leaves != nil && seq > 0 && local != "" {
		return c.Leaves[local] >= seq
	}
	return !slices.ContainsFunc(c.Members, func(m RemoteMember) bool { return m.ID == uid })
}

// LeaveRemote commits, at home, the request of uid (name@region, a
// member of another region) to leave gid, a group of this region, as the
// member's region's link brought it. A request of someone who is no
// longer a member (removed meanwhile) is done already. seq is the
// request's place in that region's outbox for this one (linkseq.go): a
// request at or below the last one applied from that region is a resend
// and changes nothing (the member may have been added again since);
// 0 (a region of an earlier version): applied as before.
func (s *Service) LeaveRemote(ctx context.Context, gid, uid string, seq uint64) error {
	if strings.IndexByte(gid, '@') >= 0 || wire.ValidGroupID(gid) != nil || !remoteMember(uid) {
		return fmt.Errorf("users: leave %q of %q: %w", uid, gid, wire.ErrInvalid)
	}
	v, err := s.propose(ctx, wire.CmdGroupMember, groupMemberCmd{GID: gid, By: uid, UIDs: []string{uid},
		Remove: true, Max: max(s.maxMembers, 1), At: s.now().UTC(), Seq: seq})
	switch {
	case errors.Is(err, ErrNoGroup) || errors.Is(err, ErrNotMember):
		return nil // not a member (any more), or no such group: nothing to do
	case err != nil:
		return err
	}
	mc, ok := v.(memberChange)
	switch {
	case ok && len(mc.Changes) == 0:
		return nil // a resend, or nothing to do
	case !ok:
		mc.Changes = []roleChange{{UID: uid}}
	}
	s.publishMemberEvents(gid, uid, mc.Changes)
	return nil
}

// leaveRemoteGroup answers a member's DELETE of themselves from mirror
// gid: out at once here, the home told through the link.
func (s *Service) leaveRemoteGroup(w http.ResponseWriter, r *http.Request, gid, uid string) {
	s.mu.RLock()
	_, ok := s.regions.(LeaveStager)
	s.mu.RUnlock()
	var v any
	err := forbidden("group %s lives in another region: change it there", gid)
	if ok {
		v, err = s.propose(r.Context(), wire.CmdGroupLeave, groupLeaveCmd{GID: gid, UID: uid})
	}
	if err != nil {
		httpapi.WriteError(w, httpError(err))
		return
	}
	mc, ok := v.(memberChange)
	if !ok {
		mc.Changes = []roleChange{{UID: uid}}
	}
	s.publishMemberEvents(gid, uid, mc.Changes)
	w.WriteHeader(http.StatusNoContent)
}
