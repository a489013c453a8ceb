package users

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/internal/httpapi"
	"github.com/edgechat/edgechat/internal/wire"
)

// Body limits of the group routes.
const (
	maxCreateGroupBody = 64 << 10 // 1,000 member IDs fit
	maxGroupPatchBody  = 4 << 10
	maxMembersBody     = 64 << 10
	maxOwnerBody       = 1 << 10
	// GET /user/groups/{gid} lists members up to this group size; bigger
	// groups are paged through GET /user/groups/{gid}/members.
	InlineMemberList = 200
)

// Request bodies (decoded strictly; fuzzed).
type createGroupRequest struct {
	Name        string   `json:"name"`
	Members     []string `json:"members,omitempty"`
	Avatar      string   `json:"avatar,omitempty"`
	Description string   `json:"description,omitempty"`
}

type patchGroupRequest struct {
	Name          *string `json:"name,omitempty"`
	Avatar        *string `json:"avatar,omitempty"`
	Description   *string `json:"description,omitempty"`
	RetentionDays *int    `json:"retentionDays,omitempty"`
}

// membersRequest adds members or changes roles: uid (one) or uids (a
// batch of up to 1,000), role "member" (default) or "admin".
type membersRequest struct {
	UID  string   `json:"uid,omitempty"`
	UIDs []string `json:"uids,omitempty"`
	Role Role     `json:"role,omitempty"`
}

func decodeCreateGroup(b []byte) (createGroupRequest, error) {
	var req createGroupRequest
	if err := httpapi.DecodeJSONBytes(b, &req); err != nil {
		return req, err
	}
	// Distinct users count, the owner's own name aside (a member picker
	// may list its user): the handler checks again without the owner.
	if len(dedupe(req.Members, "")) > MaxInitialMembers+1 {
		return req, tooManyInitial()
	}
	return req, nil
}

func tooManyInitial() error {
	return httpapi.Errorf(http.StatusBadRequest, httpapi.CodeValidation,
		"at most %d initial members; add more afterwards", MaxInitialMembers)
}

func decodePatchGroup(b []byte) (patchGroupRequest, error) {
	var req patchGroupRequest
	err := httpapi.DecodeJSONBytes(b, &req)
	return req, err
}

func decodeMembers(b []byte) (membersRequest, error) {
	var req membersRequest
	if err := httpapi.DecodeJSONBytes(b, &req); err != nil {
		return req, err
	}
	if (req.UID == "") == (len(req.UIDs) == 0) {
		return req, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeValidation, "give either uid or uids")
	}
	if req.UID != "" {
		req.UIDs = []string{req.UID}
	}
	req.UIDs = dedupe(req.UIDs, "") // a user named twice counts once
	if len(req.UIDs) > MaxMemberBatch {
		return req, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeValidation, "at most %d uids per request", MaxMemberBatch)
	}
	if req.Role == "" {
		req.Role = RoleMember
	}
	return req, nil
}

// readBody reads a request body under the route's limit for a decoder.
func readBody(r *http.Request, limit int64) ([]byte, error) {
	var raw json.RawMessage
	if err := httpapi.DecodeJSON(r, &raw, limit); err != nil {
		return nil, err
	}
	return raw, nil
}

func (s *Service) groupRoutes() []httpapi.Route {
	return []httpapi.Route{
		{Method: http.MethodPost, Pattern: "/user/groups", Handler: s.handleCreateGroup, Class: "write", MaxBody: maxCreateGroupBody},
		{Method: http.MethodGet, Pattern: "/user/groups", Handler: s.handleMyGroups, Class: "read", CatchUp: true},
		{Method: http.MethodGet, Pattern: "/user/groups/{gid}", Handler: s.handleGetGroup, Class: "read"},
		{Method: http.MethodPatch, Pattern: "/user/groups/{gid}", Handler: s.handlePatchGroup, Class: "write", CatchUp: true, MaxBody: maxGroupPatchBody},
		{Method: http.MethodGet, Pattern: "/user/groups/{gid}/members", Handler: s.handleListMembers, Class: "read", CatchUp: true},
		{Method: http.MethodPost, Pattern: "/user/groups/{gid}/members", Handler: s.handleSetMembers, Class: "write", CatchUp: true, MaxBody: maxMembersBody},
		{Method: http.MethodDelete, Pattern: "/user/groups/{gid}/members/{uid}", Handler: s.handleRemoveMember, Class: "write", CatchUp: true},
		{Method: http.MethodPost, Pattern: "/user/groups/{gid}/owner", Handler: s.handleTransfer, Class: "write", CatchUp: true, MaxBody: maxOwnerBody},
	}
}

// GroupMember is one entry of a group's member list.
type GroupMember struct {
	UID  string `json:"userId"`
	Role Role   `json:"role"`
}

// groupView is a group as its members see it.
type groupView struct {
	Group
	Role    Role          `json:"role"`
	Members []GroupMember `json:"members,omitempty"`
}

// view builds what uid sees of gid; ErrNoGroup unless uid is a member.
func (s *Service) view(gid, uid string, withMembers bool) (groupView, error) {
	role, ok := s.Role(gid, uid)
	if !ok {
		return groupView{}, ErrNoGroup
	}
	g, err := s.Group(gid)
	if err != nil {
		return groupView{}, err
	}
	v := groupView{Group: g, Role: role}
	if withMembers && g.MemberCount <= InlineMemberList {
		m, err := s.members(gid)
		if err != nil {
			return groupView{}, err
		}
		v.Members = make([]GroupMember, 0, len(m.ids))
		for _, id := range m.ids {
			v.Members = append(v.Members, GroupMember{UID: id, Role: m.roles[id]})
		}
	}
	return v, nil
}

func (s *Service) propose(ctx context.Context, t byte, cmd any) (any, error) {
	b, err := json.Marshal(cmd)
	if err != nil {
		return nil, fmt.Errorf("users: encode command: %w", err)
	}
	v, err := s.proposer.Propose(ctx, t, b)
	return unwrap(v), err
}

func (s *Service) handleCreateGroup(w http.ResponseWriter, r *http.Request) {
	p, ok := principal(w, r)
	if !ok {
		return
	}
	key, err := httpapi.IdempotencyKey(r)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	body, err := readBody(r, maxCreateGroupBody)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	req, err := decodeCreateGroup(body)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	name, err := normalizeGroupName(req.Name, s.joiners())
	if err == nil {
		err = errors.Join(validAvatar(req.Avatar), validDescription(req.Description))
	}
	if err != nil {
		httpapi.WriteError(w, httpError(err))
		return
	}
	if req.Members, err = s.normalizeMembers(req.Members, true); err != nil {
		httpapi.WriteError(w, httpError(err))
		return
	}
	members := dedupe(req.Members, p.UserID)
	if len(members) > MaxInitialMembers {
		httpapi.WriteError(w, tooManyInitial())
		return
	}
	cmd := groupCreateCmd{Owner: p.UserID, Name: name, Avatar: req.Avatar, Description: req.Description,
		Members: members, Max: s.maxMembers, At: s.now().UTC()}
	if key != "" {
		// The request as normalised: members in any order, repeated or
		// naming the owner, are the same request.
		cmd.Key, cmd.GID = key, keyedGroupID(p.UserID, key)
		cmd.Hash = httpapi.Fingerprint([]any{name, req.Avatar, req.Description, members})
	}
	// Fast answers; the FSM handler decides for real. A retry whose key
	// this node knows skips them: it is answered whatever changed since.
	if key == "" || !s.groupKeyKnown(p.UserID, key) {
		if err := s.refuseDeleted(members); err != nil {
			httpapi.WriteError(w, httpError(err))
			return
		}
		if len(members)+1 > s.maxMembers {
			httpapi.WriteError(w, httpError(fmt.Errorf("%w: at most %d members", ErrGroupFull, s.maxMembers)))
			return
		}
	}
	var v any
	for range 3 { // a random 16-character ID colliding is all but impossible; retry anyway
		if key == "" {
			cmd.GID = newGroupID()
		}
		if v, err = s.propose(r.Context(), wire.CmdGroupCreate, cmd); !errors.Is(err, ErrGroupExists) || key != "" {
			break
		}
	}
	if err != nil {
		httpapi.WriteError(w, httpError(err))
		return
	}
	if replay, ok := v.(groupReplay); ok {
		// A retry: the group the first request made, as it is now.
		if replay.Found {
			s.publishToGroup(replay.Group.ID, nil, EventGroupCreated, GroupEvent{GID: replay.Group.ID, By: p.UserID, Name: replay.Group.Name})
		}
		view, err := s.view(replay.Group.ID, p.UserID, true)
		if err != nil {
			httpapi.WriteError(w, httpError(err))
			return
		}
		w.Header().Set("Location", "/user/groups/"+view.ID)
		httpapi.WriteJSON(w, http.StatusOK, view)
		return
	}
	g, ok := v.(Group)
	if !ok {
		if g, err = s.Group(cmd.GID); err != nil {
			httpapi.WriteError(w, httpError(err))
			return
		}
	}
	s.events.publish(append(members, p.UserID), EventGroupCreated, GroupEvent{GID: g.ID, By: p.UserID, Name: g.Name})
	view, err := s.view(g.ID, p.UserID, true)
	if err != nil {
		httpapi.WriteError(w, httpError(err))
		return
	}
	w.Header().Set("Location", "/user/groups/"+g.ID)
	httpapi.WriteJSON(w, http.StatusCreated, view)
}

// groupKeyKnown reports whether this node has applied a group creation
// by owner with the Idempotency-Key key.
func (s *Service) groupKeyKnown(owner, key string) bool {
	var found bool
	_ = s.db.View(func(tx *badger.Txn) error {
		var rec groupKeyRecord
		found, _ = fsm.GetJSON(tx, groupKeyRecordKey(owner, key), &rec)
		return nil
	})
	return found
}

func (s *Service) handleMyGroups(w http.ResponseWriter, r *http.Request) {
	p, ok := principal(w, r)
	if !ok {
		return
	}
	cursor, limit, err := pageParams(r, defaultPage, maxPage, groupCursor)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	mine, err := s.userGroups(p.UserID)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	gids := make([]string, 0, len(mine))
	for gid := range mine {
		if gid > cursor {
			gids = append(gids, gid)
		}
	}
	slices.Sort(gids)
	out := map[string]any{}
	if len(gids) > limit {
		gids = gids[:limit]
		out["nextCursor"] = encodeCursor(gids[limit-1])
	}
	list := make([]groupView, 0, len(gids))
	for _, gid := range gids {
		g, err := s.Group(gid)
		if err != nil {
			continue // removed between the two reads
		}
		list = append(list, groupView{Group: g, Role: mine[gid]})
	}
	out["groups"] = list
	httpapi.WriteJSON(w, http.StatusOK, out)
}

func (s *Service) handleGetGroup(w http.ResponseWriter, r *http.Request) {
	p, ok := principal(w, r)
	if !ok {
		return
	}
	v, err := s.view(r.PathValue("gid"), p.UserID, true)
	if err != nil {
		httpapi.WriteError(w, httpError(err))
		return
	}
	writeWithETag(w, r, v)
}

func (s *Service) handleListMembers(w http.ResponseWriter, r *http.Request) {
	p, ok := principal(w, r)
	if !ok {
		return
	}
	gid := r.PathValue("gid")
	cursor, limit, err := pageParams(r, maxPage, 1000, peerCursor)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	m, err := s.members(gid)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	if _, ok := m.roles[p.UserID]; !ok {
		httpapi.WriteError(w, httpError(ErrNoGroup))
		return
	}
	i := 0
	if cursor != "" {
		i = sort.SearchStrings(m.ids, cursor+"\x00")
	}
	end := min(i+limit, len(m.ids))
	page := make([]GroupMember, 0, end-i)
	for _, id := range m.ids[i:end] {
		page = append(page, GroupMember{UID: id, Role: m.roles[id]})
	}
	out := map[string]any{"members": page}
	if end < len(m.ids) {
		out["nextCursor"] = encodeCursor(m.ids[end-1])
	}
	httpapi.WriteJSON(w, http.StatusOK, out)
}

func (s *Service) handlePatchGroup(w http.ResponseWriter, r *http.Request) {
	p, ok := principal(w, r)
	if !ok {
		return
	}
	gid := r.PathValue("gid")
	body, err := readBody(r, maxGroupPatchBody)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	req, err := decodePatchGroup(body)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	// Fast answers from the cache; the FSM handler decides for real.
	role, member := s.Role(gid, p.UserID)
	switch {
	case !member:
		err = ErrNoGroup
	case role.rank() < RoleAdmin.rank():
		err = forbidden("only admins and the owner can edit the group")
	}
	if err == nil && req.Name != nil {
		var name string
		name, err = normalizeGroupName(*req.Name, s.joiners())
		req.Name = &name
	}
	if err == nil && req.Avatar != nil {
		err = validAvatar(*req.Avatar)
	}
	if err == nil && req.Description != nil {
		err = validDescription(*req.Description)
	}
	if err == nil && req.RetentionDays != nil {
		err = validRetentionDays(*req.RetentionDays)
	}
	if err == nil && req == (patchGroupRequest{}) {
		s.writeView(w, r, gid, p.UserID) // nothing to change
		return
	}
	if err == nil {
		_, err = s.propose(r.Context(), wire.CmdGroupUpdate, groupUpdateCmd{GID: gid, By: p.UserID,
			Name: req.Name, Avatar: req.Avatar, Description: req.Description, RetentionDays: req.RetentionDays, At: s.now().UTC()})
	}
	if err != nil {
		httpapi.WriteError(w, httpError(err))
		return
	}
	s.publishToGroup(gid, nil, EventGroupUpdated, GroupEvent{GID: gid, By: p.UserID, Name: deref(req.Name)})
	s.writeView(w, r, gid, p.UserID)
}

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

func (s *Service) writeView(w http.ResponseWriter, r *http.Request, gid, uid string) {
	v, err := s.view(gid, uid, true)
	if err != nil {
		httpapi.WriteError(w, httpError(err))
		return
	}
	writeWithETag(w, r, v)
}

// publishToGroup sends an event to gid's current members and to extra
// users (those just removed).
func (s *Service) publishToGroup(gid string, extra []string, typ string, ev GroupEvent) {
	if s.pub == nil {
		return
	}
	to, err := s.MemberIDs(gid)
	if err != nil && !errors.Is(err, ErrNoGroup) {
		s.log.Error("listing members for an event", "gid", gid, "err", err)
	}
	// Events go to this region's users only (members of other regions
	// get theirs from their region's mirror).
	local := make([]string, 0, len(to)+len(extra))
	for _, uid := range append(slices.Clip(to), extra...) { // to may be the cache's
		if !remoteMember(uid) {
			local = append(local, uid)
		}
	}
	s.events.publish(local, typ, ev)
}

func (s *Service) handleSetMembers(w http.ResponseWriter, r *http.Request) {
	p, ok := principal(w, r)
	if !ok {
		return
	}
	gid := r.PathValue("gid")
	body, err := readBody(r, maxMembersBody)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	req, err := decodeMembers(body)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	s.changeMembers(w, r, p.UserID, gid, req.UIDs, false, req.Role)
}

func (s *Service) handleRemoveMember(w http.ResponseWriter, r *http.Request) {
	p, ok := principal(w, r)
	if !ok {
		return
	}
	s.changeMembers(w, r, p.UserID, r.PathValue("gid"), []string{r.PathValue("uid")}, true, "")
}

func (s *Service) changeMembers(w http.ResponseWriter, r *http.Request, by, gid string, uids []string, remove bool, role Role) {
	uids, err := s.normalizeMembers(uids, !remove)
	if err != nil {
		httpapi.WriteError(w, httpError(err))
		return
	}
	if remove && len(uids) == 1 && uids[0] == by && strings.IndexByte(gid, '@') >= 0 {
		s.leaveRemoteGroup(w, r, gid, by) // groups_leave.go
		return
	}
	if _, member := s.Role(gid, by); !member && leaving(gid, by, uids, remove) {
		w.WriteHeader(http.StatusNoContent) // not in it (any more): nothing to leave
		return
	}
	// Fast answers from the cache; the FSM handler decides for real.
	actor, _ := s.Role(gid, by)
	var added []string
	for _, uid := range uids {
		target, _ := s.Role(gid, uid)
		if err := memberRule(by, actor, uid, target, remove, role); err != nil {
			httpapi.WriteError(w, httpError(err))
			return
		}
		if !remove && target == "" {
			added = append(added, uid)
		}
	}
	// Additions only: a member whose account was deleted since may still
	// have their role changed (or be removed).
	if err := s.refuseDeleted(added); err != nil {
		httpapi.WriteError(w, httpError(err))
		return
	}
	v, err := s.propose(r.Context(), wire.CmdGroupMember, groupMemberCmd{GID: gid, By: by, UIDs: uids,
		Remove: remove, Role: role, Max: s.maxMembers, At: s.now().UTC()})
	if err != nil {
		httpapi.WriteError(w, httpError(err))
		return
	}
	mc, ok := v.(memberChange)
	// The value did not travel back: describe the request instead. So
	// does an addition that changed nothing: it is most likely sent again
	// after its first attempt committed while its client gave up, which
	// left the change untold (the events go out after the commit, from
	// the handler); telling the members again is harmless (clients
	// subscribe again), never telling the new member's devices to
	// subscribe to the group is not.
	if !ok || (!remove && len(mc.Changes) == 0) {
		mc.Changes = mc.Changes[:0]
		for _, uid := range uids {
			ch := roleChange{UID: uid, To: role}
			if remove {
				ch = roleChange{UID: uid}
			}
			mc.Changes = append(mc.Changes, ch)
		}
	}
	s.publishMemberEvents(gid, by, mc.Changes)
	if remove {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	s.writeView(w, r, gid, by)
}

func (s *Service) publishMemberEvents(gid, by string, changes []roleChange) {
	var added []string
	var addedRole Role
	for _, ch := range changes {
		switch {
		case ch.To == "":
			s.publishToGroup(gid, []string{ch.UID}, EventGroupMemberRemoved, GroupEvent{GID: gid, UID: ch.UID, By: by})
		case ch.From == "":
			added, addedRole = append(added, ch.UID), ch.To
		default:
			s.publishToGroup(gid, nil, EventGroupRoleChanged, GroupEvent{GID: gid, UID: ch.UID, Role: ch.To, By: by})
		}
	}
	switch {
	case len(added) == 1:
		s.publishToGroup(gid, nil, EventGroupMemberAdded, GroupEvent{GID: gid, UID: added[0], Role: addedRole, By: by})
	case len(added) > 1:
		s.publishToGroup(gid, nil, EventGroupMemberAdded, GroupEvent{GID: gid, UIDs: added, Role: addedRole, By: by})
	}
}

func (s *Service) handleTransfer(w http.ResponseWriter, r *http.Request) {
	p, ok := principal(w, r)
	if !ok {
		return
	}
	gid := r.PathValue("gid")
	var req uidRequest
	if err := req.decode(r, maxOwnerBody); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	// name@{this region} is the local user, as when adding or removing.
	uids, err := s.normalizeMembers([]string{req.UID}, false)
	if err != nil {
		httpapi.WriteError(w, httpError(err))
		return
	}
	req.UID = uids[0]
	actor, _ := s.Role(gid, p.UserID)
	if role, _ := s.Role(gid, req.UID); transferDone(actor, role == RoleOwner) {
		// A retry of a transfer done: nothing to do but tell the members
		// again (the first attempt's client may have given up before its
		// handler told them, as for an addition that changes nothing).
		s.publishToGroup(gid, nil, EventGroupOwnerChanged, GroupEvent{GID: gid, UID: req.UID, Role: RoleOwner, By: p.UserID})
		s.writeView(w, r, gid, p.UserID)
		return
	}
	err = ownerRule(p.UserID, actor, req.UID)
	if err == nil {
		// A deleted account could not manage the group until the erase
		// passed it on: an unknown user, as when adding.
		err = s.refuseDeleted([]string{req.UID})
	}
	if err == nil {
		if _, member := s.Role(gid, req.UID); !member {
			err = fmt.Errorf("%w: %s", ErrNotMember, req.UID)
		}
	}
	if err == nil {
		_, err = s.propose(r.Context(), wire.CmdGroupOwner, groupOwnerCmd{GID: gid, By: p.UserID, UID: req.UID, At: s.now().UTC()})
	}
	if err != nil {
		httpapi.WriteError(w, httpError(err))
		return
	}
	// Also for a retry that found it done (no change): told again.
	s.publishToGroup(gid, nil, EventGroupOwnerChanged, GroupEvent{GID: gid, UID: req.UID, Role: RoleOwner, By: p.UserID})
	s.writeView(w, r, gid, p.UserID)
}
