package users

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/internal/address"
	"github.com/edgechat/edgechat/internal/wire"
)

// Contacts and blocks across regions (issue 14, bridge/region).
//
// A user of this region may put a user of a linked region in their
// contacts or blocks (uid bob@us): the entry is kept here like a local
// one (c/alice/bob@us, b/alice/bob@us), so everything this region decides
// about bob@us reads it (the archive refuses bob@us's messages to alice,
// the bridge drops his typing and receipts). The rules that are decided
// in bob's region — whether bob may watch alice's presence: the
// visibility rule is applied in the viewer's region — need the entry
// there too: inside the FSM transaction of the change, the RelationHook
// stages it in us's link outbox (in commit order with the messages), and
// us commits it as a relation of a user of another region
// (CmdRemoteRelation): c/alice@eu/bob, b/alice@eu/bob, read by the same
// IsContact and IsBlocked. Removing stages the removal the same way.
//
// Adding asks the remote profile lookup first (cached, at most
// remoteCheckTimeout): "no such user" is 404 and changes nothing; a link
// that is down with nothing cached does not stop it (a block must not
// wait for a link): the entry is kept and reaches us when the link is
// back, where a user that does not exist is skipped.

// RelationHook hears, inside the FSM transaction, of a committed contact
// or block change of a user of this region (owner) about a user of
// another region (uid, name@region); kind is "contact" or "block". The
// region bridge stages it for uid's region; the function it returns runs
// after the commit.
type RelationHook func(tx *badger.Txn, kind, owner, uid string, add bool, at time.Time) (func(), error)

// SetRelationHook installs the hook (before Raft applies entries).
func (s *Service) SetRelationHook(h RelationHook) {
	s.mu.Lock()
	s.relHook = h
	s.mu.Unlock()
}

// remoteCheckTimeout bounds the profile lookup of a new contact or block
// of another region.
const remoteCheckTimeout = 2 * time.Second

// relationTarget reads the uid of a contact or block request on the
// proposing node: a local user ID as it is, name@{this region} as name,
// name@{linked region} kept; another region is wire.ErrNoRegion (404)
// when adding and kept when removing (a link taken away later must not
// make an entry impossible to remove); a malformed address is not found.
func (s *Service) relationTarget(uid string, adding bool) (string, error) {
	if strings.IndexByte(uid, '@') < 0 {
		return uid, nil
	}
	a, err := address.Parse(uid)
	if err != nil || a.Region == "" || wire.ValidUserID(a.Name) != nil {
		return "", fmt.Errorf("%w: user %q", wire.ErrNotFound, uid)
	}
	s.mu.RLock()
	rg := s.regions
	s.mu.RUnlock()
	switch {
	case rg != nil && a.Region == rg.Local():
		return a.Name, nil
	case adding && (rg == nil || !rg.Linked(a.Region)):
		return "", fmt.Errorf("%w: %q", wire.ErrNoRegion, uid)
	}
	return a.String(), nil
}

// linked tells whether uid is a local user or one of a linked region.
func (s *Service) linked(uid string) bool {
	region := address.RegionOf(uid)
	if region == "" {
		return true
	}
	s.mu.RLock()
	rg := s.regions
	s.mu.RUnlock()
	return rg != nil && rg.Linked(region)
}

// FreshRemoteProfiles may be implemented by the RemoteProfiles given to
// SetRemoteProfiles: RemoteProfileFresh asks the other region even when
// a copy is cached, and serves the copy only when it cannot ask.
type FreshRemoteProfiles interface {
	RemoteProfileFresh(ctx context.Context, addr string) ([]byte, error)
}

// remoteProfile asks the profile of uid (name@region) of another region:
// its JSON, nil when the link could not tell (down, nothing cached), or
// wire.ErrNotFound. fresh asks that region even when a copy is cached
// (a contact: an account deleted since the copy is no one to add).
func (s *Service) remoteProfile(ctx context.Context, uid string, fresh bool) ([]byte, error) {
	if s.remote == nil {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(ctx, remoteCheckTimeout)
	defer cancel()
	get := s.remote.RemoteProfile
	if f, ok := s.remote.(FreshRemoteProfiles); ok && fresh {
		get = f.RemoteProfileFresh
	}
	b, err := get(ctx, uid)
	switch {
	case errors.Is(err, wire.ErrNotFound):
		return nil, err
	case err != nil:
		s.log.Info("profile of another region's user not available: contact or block kept unchecked", "uid", uid, "err", err)
		return nil, nil
	}
	return b, nil
}

// remoteRelationCmd is CmdRemoteRelation's payload: a contact or block
// of a user of another region (Owner, name@region) about a user of this
// one (UID), as the link brought it.
type remoteRelationCmd struct {
	Kind string `json:"kind"` // contact or block
	relationCmd
}

// ApplyRemoteRelation commits a contact or block change that a user of
// another region (owner, name@region) made about uid, a user of this
// region (the region bridge calls it for what the link brings).
// wire.ErrNotFound: no such user here (or, for a contact, an account
// deleted and waiting for its erasure); wire.ErrInvalid: malformed.
func (s *Service) ApplyRemoteRelation(ctx context.Context, kind, owner, uid string, add bool, at time.Time) error {
	c := remoteRelationCmd{Kind: kind, relationCmd: relationCmd{Owner: owner, UID: uid, Add: add, At: at}}
	if err := c.check(); err != nil {
		return err
	}
	if add && kind == "contact" && s.refuseDeleted([]string{uid}) != nil {
		// As for a local contact (relate): a deleted account is no one to
		// add, also when the other region's profile lookup was answered
		// (or cached) before the deletion.
		return fmt.Errorf("%w: user %s (deleted)", wire.ErrNotFound, uid)
	}
	b, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("users: encode command: %w", err)
	}
	_, err = s.proposer.Propose(ctx, wire.CmdRemoteRelation, b)
	return err
}

func (c remoteRelationCmd) check() error {
	a, err := address.Parse(c.Owner)
	switch {
	case c.Kind != "contact" && c.Kind != "block":
		return fmt.Errorf("users: relation kind %q: %w", c.Kind, wire.ErrInvalid)
	case err != nil || a.Region == "" || wire.ValidUserID(a.Name) != nil:
		return fmt.Errorf("users: relation owner %q is not a user of another region: %w", c.Owner, wire.ErrInvalid)
	case wire.ValidUserID(c.UID) != nil:
		return fmt.Errorf("users: relation uid %q: %w", c.UID, wire.ErrNotFound)
	}
	return nil
}

func (s *Service) applyRemoteRelation(tx *badger.Txn, _ fsm.Position, payload []byte) (any, error) {
	var c remoteRelationCmd
	if err := json.Unmarshal(payload, &c); err != nil {
		return nil, fmt.Errorf("%w: %v", errBadCommand, err)
	}
	if err := c.check(); err != nil {
		return nil, errors.Join(errBadCommand, err)
	}
	prefix, inv := prefixContact, invalidation{contacts: []string{c.Owner}}
	if c.Kind == "block" {
		prefix, inv = prefixBlock, invalidation{blocks: []string{c.Owner}}
	}
	key := []byte(prefix + c.Owner + "/" + c.UID)
	// c.UID may see c.Owner's presence again (or for the first time): the
	// subscriptions to presence/{owner} its sessions kept are handed the
	// status (OnPresenceMayShow), as for a local owner.
	if c.Add == (c.Kind == "contact") {
		inv.hooks = s.presenceMayShow(relationCmd{Owner: c.Owner, UID: c.UID})
	}
	if !c.Add {
		return &applied{s: s, inv: inv}, setEdge(tx, prefix, c.Owner, c.UID, key, nil)
	}
	if ok, err := exists(tx, prefixProfile+c.UID); err != nil || !ok {
		return nil, errors.Join(err, fmt.Errorf("%w: user %s", wire.ErrNotFound, c.UID))
	}
	return &applied{s: s, inv: inv}, setEdge(tx, prefix, c.Owner, c.UID, key, []byte(c.At.Format(time.RFC3339Nano)))
}

// relationChanged runs the RelationHook for a change about a user of
// another region.
func (s *Service) relationChanged(tx *badger.Txn, kind string, c relationCmd) (func(), error) {
	if strings.IndexByte(c.UID, '@') < 0 || c.Unlinked {
		return nil, nil // local, or a region no link would take it to
	}
	s.mu.RLock()
	h := s.relHook
	s.mu.RUnlock()
	if h == nil {
		return nil, nil
	}
	return h(tx, kind, c.Owner, c.UID, c.Add, c.At)
}
