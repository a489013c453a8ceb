package users

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/dgraph-io/badger/v4"

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

// groupChanged runs the hook for gid and hangs its after-commit function
// on a.
func (s *Service) groupChanged(tx *badger.Txn, gid string, a *applied) (*applied, error) {
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
}

// GroupState reads gid's state inside tx; found is false when there is
// no such group (deleted, or never made).
func GroupState(tx *badger.Txn, gid string) (st RemoteGroup, found bool, err error) {
	g, found, err := readGroup(tx, gid)
	if err != nil || !found {
		return RemoteGroup{Group: Group{ID: gid}}, false, err
	}
	st.Group = g
	_, err = scan(tx, prefixMember+gid+"/", "", "", true, func(uid string, v []byte) (bool, error) {
		st.Members = append(st.Members, RemoteMember{ID: uid, Role: Role(v)})
		return false, nil
	})
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
// member of this region removes the mirror.
func (s *Service) ApplyMirror(ctx context.Context, st RemoteGroup) error {
	_, err := s.propose(ctx, wire.CmdGroupMirror, st)
	return err
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
	want := map[string]Role{}
	local := 0
	for _, m := range c.Members {
		if validMember(m.ID) != nil || m.Role.rank() == 0 {
			return nil, fmt.Errorf("%w: mirror %s: member %q role %q", errBadCommand, gid, m.ID, m.Role)
		}
		want[m.ID] = m.Role
		if strings.IndexByte(m.ID, '@') < 0 {
			local++
		}
	}
	if local == 0 {
		clear(want) // nobody of ours: the mirror goes
	}
	inv := invalidation{groups: []string{gid}}
	old, _, err := GroupState(tx, gid)
	if err != nil {
		return nil, err
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
	}
	for uid, r := range want {
		if was, err := readRole(tx, gid, uid); err != nil {
			return nil, err
		} else if was == r {
			continue
		}
		if err := setRole(tx, gid, uid, r); err != nil {
			return nil, err
		}
		inv.userGroups = append(inv.userGroups, uid)
	}
	if len(want) == 0 {
		if err := tx.Delete([]byte(prefixGroup + gid)); err != nil {
			return nil, err
		}
		return &applied{s: s, inv: inv}, nil
	}
	g := c.Group
	g.MemberCount = len(want)
	if err := writeGroup(tx, g); err != nil {
		return nil, err
	}
	return &applied{s: s, value: g, inv: inv}, nil
}
