package users

import (
	"encoding/json"
	"fmt"
	"slices"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/internal/address"
	"github.com/edgechat/edgechat/internal/wire"
)

// groupEntry caches a group's metadata, or that it does not exist.
type groupEntry struct {
	g  Group
	ok bool
}

// memberSet caches every member of one group: Role answers from roles in
// O(1); ids (sorted) serves MemberIDs and member pages.
type memberSet struct {
	exists bool
	roles  map[string]Role
	ids    []string
}

// Group returns gid's metadata (through the cache); a missing group is
// ErrNoGroup. It does not check membership.
func (s *Service) Group(gid string) (Group, error) {
	if wire.ValidGroupID(gid) != nil {
		return Group{}, ErrNoGroup
	}
	e, err := cached(s.cache.groups, gid, func() (groupEntry, error) {
		var e groupEntry
		err := s.db.View(func(tx *badger.Txn) error {
			var err error
			e.g, e.ok, err = readGroup(tx, gid)
			return err
		})
		if err != nil {
			return e, fmt.Errorf("users: read group: %w", err)
		}
		return e, nil
	})
	if err != nil {
		return Group{}, err
	}
	if !e.ok {
		return Group{}, ErrNoGroup
	}
	return e.g, nil
}

func (s *Service) members(gid string) (*memberSet, error) {
	if wire.ValidGroupID(gid) != nil {
		return &memberSet{}, nil
	}
	return cached(s.cache.members, gid, func() (*memberSet, error) {
		m := &memberSet{roles: make(map[string]Role)}
		prefix := prefixMember + gid + "/"
		err := s.db.View(func(tx *badger.Txn) error {
			var err error
			if m.exists, err = exists(tx, prefixGroup+gid); err != nil || !m.exists {
				return err
			}
			_, err = scan(tx, prefix, "", "", true, func(uid string, v []byte) (bool, error) {
				m.roles[uid] = Role(v)
				m.ids = append(m.ids, uid) // keys come sorted
				return false, nil
			})
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("users: read members of %s: %w", gid, err)
		}
		return m, nil
	})
}

// Role returns uid's role in gid and whether uid is a member. It is the
// membership check of every group publish: O(1) from a cache of the
// group's member set, which committed changes invalidate on every node.
func (s *Service) Role(gid, uid string) (Role, bool) {
	m, err := s.members(gid)
	if err != nil {
		s.log.Error("membership check", "gid", gid, "err", err)
		return "", false
	}
	r, ok := m.roles[uid]
	return r, ok
}

// MemberIDs lists gid's members in user-ID order (a fresh slice); a
// missing group is ErrNoGroup.
func (s *Service) MemberIDs(gid string) ([]string, error) {
	m, err := s.members(gid)
	if err != nil {
		return nil, err
	}
	if !m.exists {
		return nil, ErrNoGroup
	}
	return slices.Clone(m.ids), nil
}

func (s *Service) userGroups(uid string) (map[string]Role, error) {
	if wire.ValidUserID(uid) != nil {
		return nil, nil
	}
	return cached(s.cache.userGroups, uid, func() (map[string]Role, error) {
		gs := make(map[string]Role)
		err := s.db.View(func(tx *badger.Txn) error {
			_, err := scan(tx, prefixUserGroups+uid+"/", "", "", true, func(gid string, v []byte) (bool, error) {
				gs[gid] = Role(v)
				return false, nil
			})
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("users: read groups of %s: %w", uid, err)
		}
		return gs, nil
	})
}

// GroupsOf lists the IDs of uid's groups, sorted.
func (s *Service) GroupsOf(uid string) ([]string, error) {
	gs, err := s.userGroups(uid)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(gs))
	for gid := range gs {
		out = append(out, gid)
	}
	slices.Sort(out)
	return out, nil
}

// SharesGroup reports whether a and b are members of a common group.
func (s *Service) SharesGroup(a, b string) bool {
	ga, err := s.userGroups(a)
	if err != nil {
		s.log.Error("reading groups", "uid", a, "err", err)
		return false
	}
	gb, err := s.userGroups(b)
	if err != nil {
		s.log.Error("reading groups", "uid", b, "err", err)
		return false
	}
	if len(gb) < len(ga) {
		ga, gb = gb, ga
	}
	for gid := range ga {
		if _, ok := gb[gid]; ok {
			return true
		}
	}
	return false
}

// OnMemberRemoved registers fn to be called on this node, after the
// change is committed, for every member who left or was removed from a
// group (the broker drops that user's live group subscriptions). fn runs
// on the FSM's apply path: it must be quick and must not propose.
func (s *Service) OnMemberRemoved(fn func(gid, uid string)) {
	s.mu.Lock()
	s.onRemoved = append(s.onRemoved, fn)
	s.mu.Unlock()
}

// OnMembersAdded registers fn to be called on this node, after the
// change is committed (and the caches invalidated), with the users who
// joined a group: its members when it is created, those added to it,
// this region's users a mirror of another region's group gained. They
// and the group's members may see each other's presence from then on
// (the broker hands the current status to the subscriptions to
// presence/{uid} they kept while they could not). fn runs on the FSM's
// apply path: it must be quick and must not propose.
func (s *Service) OnMembersAdded(fn func(gid string, uids []string)) {
	s.mu.Lock()
	s.onAdded = append(s.onAdded, fn)
	s.mu.Unlock()
}

// Counts returns the number of groups (for /admin/stats): the groups
// of this region (their home) that have members, and apart the mirrors
// of other regions' groups that users of this region are in. A group
// whose every member was erased (it keeps no owner; nobody can reach
// it) is no group any more; a mirror is its home's group, counted
// there.
func (s *Service) Counts() (groups, mirrored int, err error) {
	err = s.db.View(func(tx *badger.Txn) error {
		_, err := scan(tx, prefixGroup, "", "", true, func(gid string, v []byte) (bool, error) {
			var g struct {
				MemberCount int `json:"memberCount"`
			}
			if err := json.Unmarshal(v, &g); err != nil {
				return false, fmt.Errorf("group %s: %w", gid, err)
			}
			switch {
			case g.MemberCount <= 0:
			case address.RegionOf(gid) != "":
				mirrored++
			default:
				groups++
			}
			return false, nil
		})
		return err
	})
	if err != nil {
		return 0, 0, fmt.Errorf("users: count groups: %w", err)
	}
	return groups, mirrored, nil
}
