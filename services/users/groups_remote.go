package users

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/cluster/featurelevel"
	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/internal/address"
	"github.com/edgechat/edgechat/internal/wire"
)

// Groups across regions (issue 14, bridge/region): a group lives in the
// region where it was created (its home). Its members may include users
// of linked regions, written name@region; the home region does not know
// whether they exist (their region drops what it cannot deliver). Each
// region with members keeps a mirror of the group under the qualified ID
// gid@home, written only from the home's state as the link brings it
// (CmdGroupMirror): there the home's members are name@home, the region's
// own users plain names. A mirror is read like any group (membership,
// topics, history) and changed only at home.

// GroupHook hears, inside the FSM transaction, of every committed change
// of a group of this region (created, updated, members, owner); the
// function it returns runs after the commit. The region bridge uses it to
// stage the group's state for the regions that have members.
type GroupHook func(tx *badger.Txn, gid string) (func(), error)

// SetGroupHook installs the hook (before Raft applies entries).
func (s *Service) SetGroupHook(h GroupHook) {
	s.mu.Lock()
	s.groupHook = h
	s.mu.Unlock()
}

// prefixGroupBy keys who made the last change of a group of this region
// (gid → uid): the state that crosses links tells it, so that the other
// regions' events name them (RemoteGroup.By).
const prefixGroupBy = "r/user/gb/"

// groupChanged records by as the last change's author, runs the hook for
// gid and hangs its after-commit function on a.
func (s *Service) groupChanged(tx *badger.Txn, gid, by string, a *applied) (*applied, error) {
	if err := tx.Set([]byte(prefixGroupBy+gid), []byte(by)); err != nil {
		return nil, err
	}
	after, err := s.runGroupHook(tx, gid)
	if err != nil {
		return nil, err
	}
	a.after = after
	return a, nil
}

// runGroupHook runs the hook for a group of this region (not a mirror).
func (s *Service) runGroupHook(tx *badger.Txn, gid string) (func(), error) {
	s.mu.RLock()
	h := s.groupHook
	s.mu.RUnlock()
	if h == nil || strings.IndexByte(gid, '@') >= 0 {
		return nil, nil
	}
	return h(tx, gid)
}

// Regions tells the users service this cluster's region and its links
// (the region bridge).
type Regions interface {
	Local() string
	Linked(region string) bool
}

// SetRegions installs the region bridge; without it no member of another
// region can be added.
func (s *Service) SetRegions(r Regions) {
	s.mu.Lock()
	s.regions = r
	s.mu.Unlock()
}

// normalizeMembers reads the member IDs of a request on the proposing
// node (the FSM cannot know the links): name@{this region} is name,
// name@{a linked region} stays; another region, or a malformed address,
// is an unknown user when adding (its outbox would fill for ever), and
// is left as it is when removing.
func (s *Service) normalizeMembers(uids []string, adding bool) ([]string, error) {
	s.mu.RLock()
	rg := s.regions
	s.mu.RUnlock()
	out := make([]string, 0, len(uids))
	var unknown []string
	for _, uid := range uids {
		if strings.IndexByte(uid, '@') < 0 {
			out = append(out, uid)
			continue
		}
		a, err := address.Parse(uid)
		switch {
		case err != nil || a.Region == "" || wire.ValidUserID(a.Name) != nil:
			unknown = append(unknown, uid)
		case rg != nil && a.Region == rg.Local():
			out = append(out, a.Name)
		case adding && (rg == nil || !rg.Linked(a.Region)):
			unknown = append(unknown, uid)
		default:
			out = append(out, uid)
		}
	}
	if len(unknown) > 0 {
		return nil, &UnknownUsersError{UIDs: unknown}
	}
	return out, nil
}

// remoteMember tells whether uid names a user of another region
// (name@region, well formed).
func remoteMember(uid string) bool {
	return strings.IndexByte(uid, '@') >= 0 && wire.ValidPeerID(uid) == nil
}

// validMember accepts a local user ID or name@region.
func validMember(uid string) error {
	if strings.IndexByte(uid, '@') >= 0 {
		return wire.ValidPeerID(uid)
	}
	return wire.ValidUserID(uid)
}

// RemoteMember is one member in a group's state as it crosses a link.
type RemoteMember struct {
	ID   string `json:"id"`
	Role Role   `json:"role"`
}

// RemoteGroup is a group's state as it crosses a link: its metadata and
// every member.
type RemoteGroup struct {
	Group   Group          `json:"group"`
	Members []RemoteMember `json:"members"`
	// By made the change this state follows ("" when not known).
	By string `json:"by,omitempty"`
	// Part of Parts: the state of a large group comes in chunks, each
	// with the metadata and a share of the members (bridge/region
	// groupchunks.go); the mirror changes with the last. Parts 0 or 1: whole.
	Part  int `json:"part,omitempty"`
	Parts int `json:"parts,omitempty"`
	// Seq is the state's place in the home's outbox for this region
	// (linkseq.go): a state at or below the last one applied is a resend,
	// skipped. 0: not known (a home of an earlier version), applied.
	Seq uint64 `json:"seq,omitempty"`
	// Leaves tells, per region, the seq of the last leave of a member of
	// that region the home has applied (linkseq.go; absent: none yet).
	// Always sent (an empty object at least) by a home that tells it; a
	// mirror keeps a member who left out until the home's state shows
	// their leave applied (groups_leave.go). nil (absent): a home of an
	// earlier version, or one below feature level LeaveSeqs; and below
	// that level a mirror takes none.
	Leaves map[string]uint64 `json:"leaves,omitzero"`
}

// GroupState reads gid's state inside tx; found is false when there is
// no such group (deleted, or never made).
func GroupState(tx *badger.Txn, gid string) (st RemoteGroup, found bool, err error) {
	g, found, err := readGroup(tx, gid)
	if err != nil || !found {
		return RemoteGroup{Group: Group{ID: gid}}, false, err
	}
	st.Group = g
	if it, err := tx.Get([]byte(prefixGroupBy + gid)); err == nil {
		_ = it.Value(func(v []byte) error { st.By = string(v); return nil })
	}
	_, err = scan(tx, prefixMember+gid+"/", "", "", true, func(uid string, v []byte) (bool, error) {
		st.Members = append(st.Members, RemoteMember{ID: uid, Role: Role(v)})
		return false, nil
	})
	if err != nil {
		return st, true, err
	}
	// A node of an earlier version stages states without leaves: below
	// feature level LeaveSeqs none are told, so that every node of the
	// cluster stages the same bytes.
	if told, err := featurelevel.AtLeast(tx, featurelevel.LeaveSeqs); err != nil || !told {
		return st, true, err
	}
	st.Leaves, err = appliedLeaves(tx)
	return st, true, err
}

// MemberRegions lists, sorted, the regions of gid's members of other
// regions (read inside tx).
func MemberRegions(tx *badger.Txn, gid string) ([]string, error) {
	var out []string
	_, err := scan(tx, prefixMember+gid+"/", "", "", false, func(uid string, _ []byte) (bool, error) {
		if r := address.RegionOf(uid); r != "" && !slices.Contains(out, r) {
			out = append(out, r)
		}
		return false, nil
	})
	slices.Sort(out)
	return out, err
}

// ApplyMirror commits the state of a group of another region (its ID
// qualified gid@home, members as this region names them) as this
// region's mirror of it, replacing the last one. A state without a
// member of this region removes the mirror. This region's members then
// get the group events of the change (mirrorEvents), as the home's
// members got them.
func (s *Service) ApplyMirror(ctx context.Context, st RemoteGroup) error {
	v, err := s.propose(ctx, wire.CmdGroupMirror, st)
	if err != nil {
		return err
	}
	if mc, ok := v.(mirrorChange); ok {
		s.mirrorEvents(mc)
	}
	return nil
}

// mirrorChange is the value of CmdGroupMirror: the mirror before and
// after, and the members' changes.
type mirrorChange struct {
	Old, New   Group // ID "" when there was none, or is none now
	Changes    []roleChange
	By         string
	LocalAfter []string // this region's members now
	LocalGone  []string // this region's users who left it
}

func (s *Service) applyGroupMirror(tx *badger.Txn, _ fsm.Position, payload []byte) (any, error) {
	var c RemoteGroup
	if err := json.Unmarshal(payload, &c); err != nil {
		return nil, fmt.Errorf("%w: %v", errBadCommand, err)
	}
	gid := c.Group.ID
	if wire.ValidGroupID(gid) != nil || strings.IndexByte(gid, '@') < 0 {
		return nil, fmt.Errorf("%w: a mirror needs a qualified group ID, not %q", errBadCommand, gid)
	}
	if c.Seq == 0 {
		return s.applyMirrorState(tx, gid, c)
	}
	key := prefixMirrorSeq + gid
	seen, err := seqSeen(tx, key, c.Seq)
	if err != nil || seen {
		return nil, err // seen: a resend of a state (or chunk) applied already
	}
	v, err := s.applyMirrorState(tx, gid, c)
	if err != nil {
		return nil, err
	}
	return v, setSeq(tx, key, c.Seq)
}

// applyMirrorState applies c, a state (or chunk) of mirror gid.
func (s *Service) applyMirrorState(tx *badger.Txn, gid string, c RemoteGroup) (any, error) {
	// Checked before the first write (a chunk kept aside, a pending
	// leave ended): a refused state must change nothing, and the FSM
	// commits what a handler wrote before its error.
	for _, m := range c.Members {
		if validMember(m.ID) != nil || m.Role.rank() == 0 {
			return nil, fmt.Errorf("%w: mirror %s: member %q role %q", errBadCommand, gid, m.ID, m.Role)
		}
	}
	if c.Parts > 1 {
		members, done, err := mirrorChunk(tx, gid, c)
		if err != nil || !done {
			return nil, err // kept aside until the last chunk
		}
		c.Members = members
	}
	pending, err := pendingLeaves(tx, gid) // groups_leave.go
	if err != nil {
		return nil, err
	}
	local := ""
	s.mu.RLock()
	if s.regions != nil {
		local = s.regions.Local()
	}
	s.mu.RUnlock()
	// Below feature level LeaveSeqs a pending leave ends as a node of an
	// earlier version ends it: with the first state without the member.
	if seqs, err := featurelevel.AtLeast(tx, featurelevel.LeaveSeqs); err != nil {
		return nil, err
	} else if !seqs {
		c.Leaves = nil
	}
	for uid, seq := range pending {
		if leaveApplied(c, local, uid, seq) {
			// The home has applied the leave (or removed them): done; a
			// state listing them again is the owner adding them since.
			if err := tx.Delete([]byte(prefixLeave + gid + "/" + uid)); err != nil {
				return nil, err
			}
			delete(pending, uid)
		}
	}
	want := map[string]Role{}
	for _, m := range c.Members { // checked above (each chunk's as it came)
		if _, ok := pending[m.ID]; ok {
			continue // left here, the home has not applied it yet
		}
		if !remoteMember(m.ID) {
			// A user of ours the home lists without knowing that they
			// exist (a typo, an erased account): dropped here, as what
			// cannot be delivered. Kept, they were a member that someone
			// signing up under the name later became at once, reading the
			// group's history.
			ok, err := exists(tx, prefixProfile+m.ID)
			if err != nil {
				return nil, err
			}
			if !ok {
				continue
			}
		}
		want[m.ID] = m.Role
	}
	locals := 0
	for uid := range want {
		if strings.IndexByte(uid, '@') < 0 {
			locals++
		}
	}
	if locals == 0 {
		clear(want) // nobody of ours: the mirror goes
	}
	mc := mirrorChange{By: c.By}
	inv := invalidation{groups: []string{gid}}
	old, found, err := GroupState(tx, gid)
	if err != nil {
		return nil, err
	}
	if found {
		mc.Old = old.Group
	}
	for _, m := range old.Members {
		if _, ok := want[m.ID]; ok {
			continue
		}
		if err := dropMember(tx, gid, m.ID); err != nil {
			return nil, err
		}
		inv.userGroups = append(inv.userGroups, m.ID)
		inv.removed = append(inv.removed, memberRef{gid: gid, uid: m.ID})
		mc.Changes = append(mc.Changes, roleChange{UID: m.ID, From: m.Role})
		if !remoteMember(m.ID) {
			mc.LocalGone = append(mc.LocalGone, m.ID)
		}
	}
	for _, uid := range slices.Sorted(maps.Keys(want)) {
		r := want[uid]
		if !remoteMember(uid) {
			mc.LocalAfter = append(mc.LocalAfter, uid)
		}
		was, err := readRole(tx, gid, uid)
		if err != nil {
			return nil, err
		} else if was == r {
			continue
		}
		if err := setRole(tx, gid, uid, r); err != nil {
			return nil, err
		}
		inv.userGroups = append(inv.userGroups, uid)
		if was == "" {
			inv.added = append(inv.added, memberRef{gid: gid, uid: uid})
		}
		mc.Changes = append(mc.Changes, roleChange{UID: uid, From: was, To: r})
	}
	if len(want) == 0 {
		if err := tx.Delete([]byte(prefixGroup + gid)); err != nil {
			return nil, err
		}
		return &applied{s: s, value: mc, inv: inv}, nil
	}
	g := c.Group
	g.MemberCount = len(want)
	if err := writeGroup(tx, g); err != nil {
		return nil, err
	}
	mc.New = g
	return &applied{s: s, value: mc, inv: inv}, nil
}

// mirrorEvents publishes to this region's members the group events of a
// mirror's change, as the home published them to its own: a group new
// here (created, or this region's first members added), members added,
// removed, roles, owner, name.
func (s *Service) mirrorEvents(mc mirrorChange) {
	gid := mc.New.ID
	if gid == "" {
		gid = mc.Old.ID
	}
	pub := func(extra []string, typ string, ev GroupEvent) {
		ev.GID, ev.By = gid, mc.By
		to := slices.Concat(mc.LocalAfter, extra)
		s.events.publish(to, typ, ev)
	}
	if mc.Old.ID == "" && mc.New.ID != "" && mc.New.CreatedAt.Equal(mc.New.UpdatedAt) {
		pub(nil, EventGroupCreated, GroupEvent{Name: mc.New.Name}) // created with members of ours
		return
	}
	ownerMoved := mc.Old.ID != "" && mc.New.ID != "" && mc.Old.Owner != mc.New.Owner
	added := map[Role][]string{}
	for _, ch := range mc.Changes {
		switch {
		case mc.Old.ID == "" && (ch.To == "" || remoteMember(ch.UID)):
			// New here: this region's members were added (the others
			// were there before, as far as it can tell).
		case ch.To == "":
			extra := []string(nil)
			if !remoteMember(ch.UID) {
				extra = []string{ch.UID}
			}
			pub(extra, EventGroupMemberRemoved, GroupEvent{UID: ch.UID})
		case ch.From == "":
			added[ch.To] = append(added[ch.To], ch.UID)
		case ownerMoved && (ch.From == RoleOwner || ch.To == RoleOwner):
			// the transfer's two role changes: one owner_changed below
		default:
			pub(nil, EventGroupRoleChanged, GroupEvent{UID: ch.UID, Role: ch.To})
		}
	}
	for _, r := range slices.Sorted(maps.Keys(added)) {
		if uids := added[r]; len(uids) == 1 {
			pub(nil, EventGroupMemberAdded, GroupEvent{UID: uids[0], Role: r})
		} else {
			pub(nil, EventGroupMemberAdded, GroupEvent{UIDs: uids, Role: r})
		}
	}
	if ownerMoved {
		pub(nil, EventGroupOwnerChanged, GroupEvent{UID: mc.New.Owner, Role: RoleOwner})
	}
	if o, n := mc.Old, mc.New; o.ID != "" && n.ID != "" && (o.Name != n.Name || o.Avatar != n.Avatar || o.Description != n.Description || o.RetentionDays != n.RetentionDays) {
		ev := GroupEvent{}
		if o.Name != n.Name {
			ev.Name = n.Name
		}
		pub(nil, EventGroupUpdated, ev)
	}
}

// prefixMirrorPart keys the members of a chunked state received so far:
// gid@home/uid → role.
const prefixMirrorPart = "r/user/gp/"

// mirrorChunk keeps chunk c.Part of c.Parts of mirror gid's next state
// aside; at the last chunk it returns the whole member list (done) and
// clears what it kept. Chunk 0 starts afresh (a state left half-received
// by a resend from its start, or an older state, goes).
func mirrorChunk(tx *badger.Txn, gid string, c RemoteGroup) (members []RemoteMember, done bool, err error) {
	if c.Part < 0 || c.Part >= c.Parts {
		return nil, false, fmt.Errorf("%w: mirror %s: part %d of %d", errBadCommand, gid, c.Part, c.Parts)
	}
	base := prefixMirrorPart + gid + "/"
	clearKept := func() error {
		var keys []string
		if _, err := scan(tx, base, "", "", false, func(uid string, _ []byte) (bool, error) {
			keys = append(keys, base+uid)
			return false, nil
		}); err != nil {
			return err
		}
		for _, k := range keys {
			if err := tx.Delete([]byte(k)); err != nil {
				return err
			}
		}
		return nil
	}
	if c.Part == 0 {
		if err := clearKept(); err != nil {
			return nil, false, err
		}
	}
	for _, m := range c.Members {
		if validMember(m.ID) != nil || m.Role.rank() == 0 {
			return nil, false, fmt.Errorf("%w: mirror %s: member %q role %q", errBadCommand, gid, m.ID, m.Role)
		}
		if c.Part == c.Parts-1 {
			continue
		}
		if err := tx.Set([]byte(base+m.ID), []byte(m.Role)); err != nil {
			return nil, false, err
		}
	}
	if c.Part < c.Parts-1 {
		return nil, false, nil
	}
	if _, err := scan(tx, base, "", "", true, func(uid string, v []byte) (bool, error) {
		members = append(members, RemoteMember{ID: uid, Role: Role(v)})
		return false, nil
	}); err != nil {
		return nil, false, err
	}
	if err := clearKept(); err != nil {
		return nil, false, err
	}
	return append(members, c.Members...), true, nil
}
