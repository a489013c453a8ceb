package users

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/internal/address"
	"github.com/edgechat/edgechat/internal/wire"
)

// An erased account (see services/auth/delete.go) loses its profile,
// its search entry, its contacts and blocks in both directions and its
// group memberships; its user ID keeps a tombstone under
// r/user/gone/{uid}, so that the profile of a group message's sender
// still answers, as DeletedDisplayName. The tombstone is not in the
// search index, cannot be added as a contact or to a group (those check
// the profile under p/, which is gone).

const prefixGoneProfile = "r/user/gone/" // + uid → erasedAt (RFC 3339)

// DeletedDisplayName is the display name of an erased user.
const DeletedDisplayName = "deleted user"

// tombstone is the profile an erased user's ID answers with.
func tombstone(uid string) Profile {
	return Profile{UserID: uid, DisplayName: DeletedDisplayName, Deleted: true}
}

// EraseAccount is the users service's part of erasing uid (an
// auth.Eraser): one bounded step, deterministic, only under r/user/.
func (s *Service) EraseAccount(tx *badger.Txn, uid string, b *fsm.Budget) (done bool, after func(), err error) {
	remote := strings.IndexByte(uid, '@') >= 0
	if wire.ValidPeerID(uid) != nil {
		return false, nil, fmt.Errorf("%w: bad uid", errBadCommand)
	}
	inv := invalidation{profiles: []string{uid}, contacts: []string{uid}, blocks: []string{uid}, userGroups: []string{uid}}
	after = func() { (&applied{s: s, inv: inv}).AfterCommit() }
	if remote {
		// A user of another region, erased there (bridge/region
		// erasure.go): its relations mirrored here and this region's
		// users' contacts and blocks of it go, and its tombstone answers
		// for it. Its memberships of groups stay for its region's leaves
		// (and the homes' states) to change, as they would anyway.
		return s.eraseRelationsAndProfile(tx, uid, b, &inv, after)
	}
	// Groups first: ownership must pass on while the member list is read.
	if done, err = s.eraseMemberships(tx, uid, b, &inv); err != nil || !done {
		return false, after, err
	}
	// The Idempotency-Keys of the groups uid created.
	if done, err = fsm.DeleteMatching(tx, []byte(prefixGroupKey+uid+"/"), b, nil); err != nil || !done {
		return false, after, err
	}
	return s.eraseRelationsAndProfile(tx, uid, b, &inv, after)
}

// eraseRelationsAndProfile is the rest of EraseAccount: uid's contacts
// and blocks in both directions, its profile, its tombstone.
func (s *Service) eraseRelationsAndProfile(tx *badger.Txn, uid string, b *fsm.Budget, inv *invalidation, after func()) (done bool, _ func(), err error) {
	indexed, err := relIndexed(tx)
	if err != nil {
		return false, after, err
	}
	for _, prefix := range []string{prefixContact, prefixBlock} {
		// uid's own list, then the edges others hold towards uid: from
		// uid's reverse index entries once this node's are complete
		// (relindex.go), else from every edge; the same ones either way.
		var gone [][]byte
		done, err = fsm.DeleteMatching(tx, []byte(prefix+uid+"/"), b, func(k, _ []byte) (bool, error) {
			gone = append(gone, bytes.Clone(k))
			return true, nil
		})
		if err == nil {
			err = unindexEdgeKeys(tx, prefix, gone)
		}
		if err != nil || !done {
			return false, after, err
		}
		var owners []string
		if indexed {
			owners, done, err = deleteEdgesTowards(tx, prefix, uid, b)
		} else {
			suffix := []byte("/" + uid)
			gone = gone[:0]
			done, err = fsm.DeleteMatching(tx, []byte(prefix), b, func(k, _ []byte) (bool, error) {
				if !bytes.HasSuffix(k, suffix) {
					return false, nil
				}
				owner, _, _ := strings.Cut(string(k[len(prefix):]), "/")
				owners = append(owners, owner)
				gone = append(gone, bytes.Clone(k))
				return true, nil
			})
			if err == nil {
				err = unindexEdgeKeys(tx, prefix, gone)
			}
		}
		if prefix == prefixContact {
			inv.contacts = append(inv.contacts, owners...)
		} else {
			inv.blocks = append(inv.blocks, owners...)
		}
		if err != nil || !done {
			return false, after, err
		}
	}
	if b.Spent() {
		return false, after, nil
	}
	var p Profile
	found, err := fsm.GetJSON(tx, []byte(prefixProfile+uid), &p)
	if err != nil {
		return false, after, err
	}
	if found {
		b.Left -= 2
		if err := tx.Delete(nameKey(p.DisplayName, uid)); err != nil {
			return false, after, err
		}
		if err := tx.Delete([]byte(prefixProfile + uid)); err != nil {
			return false, after, err
		}
	}
	if _, err := tx.Get([]byte(prefixGoneProfile + uid)); errors.Is(err, badger.ErrKeyNotFound) {
		b.Left--
		if err := tx.Set([]byte(prefixGoneProfile+uid), nil); err != nil {
			return false, after, err
		}
	} else if err != nil {
		return false, after, err
	}
	return true, after, nil
}

// eraseMemberships removes uid from each of its groups, handing an owned
// group to its first admin in user-ID order, or else its first member
// (join times are not kept, so "oldest" cannot be told); a group left
// without members keeps no owner.
func (s *Service) eraseMemberships(tx *badger.Txn, uid string, b *fsm.Budget, inv *invalidation) (bool, error) {
	var gids []string
	opts := badger.IteratorOptions{Prefix: []byte(prefixUserGroups + uid + "/")}
	it := tx.NewIterator(opts)
	for it.Rewind(); it.Valid(); it.Next() {
		gids = append(gids, string(it.Item().Key()[len(opts.Prefix):]))
	}
	it.Close()
	for _, gid := range gids {
		if b.Spent() { // a group costs up to 5 writes: the last may overspend a little
			return false, nil
		}
		role, err := readRole(tx, gid, uid)
		if err != nil {
			return false, err
		}
		g, found, err := readGroup(tx, gid)
		if err != nil {
			return false, err
		}
		b.Left -= 2
		if err := dropMember(tx, gid, uid); err != nil {
			return false, err
		}
		inv.removed = append(inv.removed, memberRef{gid: gid, uid: uid})
		inv.groups = append(inv.groups, gid)
		if !found {
			continue
		}
		if role != "" {
			g.MemberCount--
		}
		if g.Owner == uid {
			heir, err := s.heirOf(tx, gid, uid)
			if err != nil {
				return false, err
			}
			g.Owner = heir
			if heir != "" {
				b.Left -= 2
				if err := setRole(tx, gid, heir, RoleOwner); err != nil {
					return false, err
				}
				inv.userGroups = append(inv.userGroups, heir)
			}
		}
		b.Left--
		if err := writeGroup(tx, g); err != nil {
			return false, err
		}
		if address.RegionOf(gid) != "" {
			// A mirror: the group's home still lists the user; it is told
			// as when a member leaves (groups_leave.go), or it kept a
			// member who is gone for good, and sent them its messages.
			s.mu.RLock()
			stager, _ := s.regions.(LeaveStager)
			s.mu.RUnlock()
			if stager != nil && role != "" {
				b.Left--
				_, after, err := stager.StageGroupLeave(tx, gid, uid)
				if err != nil {
					return false, err
				}
				if after != nil {
					inv.hooks = append(inv.hooks, after)
				}
			}
			continue
		}
		// Regions with members hear of it (groups_remote.go), by nobody.
		if err := tx.Delete([]byte(prefixGroupBy + gid)); err != nil {
			return false, err
		}
		if after, err := s.runGroupHook(tx, gid); err != nil {
			return false, err
		} else if after != nil {
			inv.hooks = append(inv.hooks, after)
		}
	}
	return true, nil
}

// heirOf is the member who takes over gid from its departing owner: a
// user of this region (the home), since only the home changes a group
// and a remote owner could neither manage it nor ever leave it. Its
// first admin in user-ID order, else its first member; a member whose
// own account is deleted and waits for its erasure is passed over while
// there is another (nobody can sign in to it: the group would have no
// owner able to act until that erasure passed it on again, days later).
func (s *Service) heirOf(tx *badger.Txn, gid, owner string) (string, error) {
	prefix := []byte(prefixMember + gid + "/")
	it := tx.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: true})
	defer it.Close()
	// The first live member, and the first deleted admin and member.
	var member, deletedAdmin, deletedMember string
	for it.Rewind(); it.Valid(); it.Next() {
		uid := string(it.Item().Key()[len(prefix):])
		if uid == owner || remoteMember(uid) {
			continue
		}
		var r Role
		if err := it.Item().Value(func(v []byte) error { r = Role(v); return nil }); err != nil {
			return "", err
		}
		deleted, err := s.deletedIn(tx, uid)
		if err != nil {
			return "", err
		}
		switch {
		case r == RoleAdmin && !deleted:
			return uid, nil
		case r == RoleAdmin && deletedAdmin == "":
			deletedAdmin = uid
		case !deleted && member == "":
			member = uid
		case deleted && deletedMember == "":
			deletedMember = uid
		}
	}
	for _, uid := range []string{member, deletedAdmin, deletedMember} {
		if uid != "" {
			return uid, nil
		}
	}
	return "", nil
}

// deletedIn tells, from the replicated state of tx, whether uid's
// account is deleted (waiting for its erasure, or erased): the auth
// service's record, when the accounts it was given read it.
func (s *Service) deletedIn(tx *badger.Txn, uid string) (bool, error) {
	s.mu.RLock()
	a, ok := s.accounts.(interface {
		DeletedIn(tx *badger.Txn, uid string) (bool, error)
	})
	s.mu.RUnlock()
	if !ok {
		return false, nil
	}
	return a.DeletedIn(tx, uid)
}

// erasedRemoteIn tells, from the replicated state of tx, whether uid (a
// user of another region) was erased here: its tombstone, or its
// erasure decided and not done yet (the auth service's record, when the
// accounts it was given read it: the erasure's steps leave group
// memberships to the leaves of its region, which never come for a
// membership added after the erasure).
func (s *Service) erasedRemoteIn(tx *badger.Txn, uid string) (bool, error) {
	if gone, err := exists(tx, prefixGoneProfile+uid); err != nil || gone {
		return gone, err
	}
	return s.deletedIn(tx, uid)
}

// erasedProfile reads uid's tombstone; ok false when uid was never erased.
func erasedProfile(tx *badger.Txn, uid string) (Profile, bool, error) {
	_, err := tx.Get([]byte(prefixGoneProfile + uid))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return Profile{}, false, nil
	}
	if err != nil {
		return Profile{}, false, err
	}
	return tombstone(uid), true, nil
}

// RelationRegions lists, sorted, the other regions that hold a copy of a
// contact or block involving uid (a user of this region): those of the
// users uid lists or blocks (the change was mirrored there), and those
// of the users of other regions who list or block uid (their region
// holds the original). Read inside an FSM transaction, from replicated
// keys only: through uid's reverse index entries once this node's are
// complete (relindex.go), else from every edge; the same regions either
// way.
func RelationRegions(tx *badger.Txn, uid string) ([]string, error) {
	var out []string
	add := func(id string) {
		if r := address.RegionOf(id); r != "" && !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	indexed, err := relIndexed(tx)
	if err != nil {
		return nil, err
	}
	for _, prefix := range []string{prefixContact, prefixBlock} {
		own := []byte(prefix + uid + "/")
		it := tx.NewIterator(badger.IteratorOptions{Prefix: own})
		for it.Rewind(); it.Valid(); it.Next() {
			add(string(it.Item().Key()[len(own):]))
		}
		it.Close()
		if indexed {
			rev := []byte(reverseOf(prefix) + uid + "/")
			var owners []string
			it := tx.NewIterator(badger.IteratorOptions{Prefix: rev})
			for it.Rewind(); it.Valid(); it.Next() {
				if owner := string(it.Item().Key()[len(rev):]); address.RegionOf(owner) != "" {
					owners = append(owners, owner)
				}
			}
			it.Close()
			for _, owner := range owners {
				// An index entry may outlive its edge.
				if found, err := exists(tx, prefix+owner+"/"+uid); err != nil {
					return nil, err
				} else if found {
					add(owner)
				}
			}
			continue
		}
		suffix := []byte("/" + uid)
		it = tx.NewIterator(badger.IteratorOptions{Prefix: []byte(prefix)})
		for it.Rewind(); it.Valid(); it.Next() {
			k := it.Item().Key()
			if bytes.HasSuffix(k, suffix) {
				owner, _, _ := strings.Cut(string(k[len(prefix):]), "/")
				add(owner)
			}
		}
		it.Close()
	}
	slices.Sort(out)
	return out, nil
}
