package archive

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/internal/address"
	"github.com/edgechat/edgechat/internal/wire"
)

// resolvePeer reads the recipient of a direct message: a local user ID
// stays as it is, name@{this region} becomes name, and name@{linked
// region} stays qualified (the message is stored here and forwarded by
// the region link). Any other region is wire.ErrNoRegion.
func (s *Service) resolvePeer(to string) (string, error) {
	if strings.IndexByte(to, '@') < 0 {
		return to, nil
	}
	if wire.ValidPeerID(to) != nil {
		return "", fmt.Errorf("archive: recipient %q: %w", to, wire.ErrInvalid)
	}
	a, _ := address.Parse(to) // valid: ValidPeerID parsed it
	if s.regions == nil {
		return "", fmt.Errorf("archive: recipient %q: %w", to, wire.ErrNoRegion)
	}
	if a.Region == s.regions.Local() {
		return a.Name, nil
	}
	if !s.regions.Linked(a.Region) {
		return "", fmt.Errorf("archive: recipient %q: %w", to, wire.ErrNoRegion)
	}
	return to, nil
}

// StoreRemote stores a direct message that arrived over a region link
// (bridge/region): env.ID is the origin region's ID, env.From the
// sender qualified with their region (alice@eu), env.To a local user.
// The origin's ID is the dedupe key, so a message the link resends is
// stored once: dup is true for a resend, with the stored original. The
// link checked the envelope's client fields (wire.ParseEnvelope) and that
// From belongs to the linked region. Errors wrap wire.ErrNotFound (no
// such recipient), wire.ErrForbidden (the recipient blocked the sender),
// wire.ErrInvalid or wire.ErrUnavailable.
func (s *Service) StoreRemote(ctx context.Context, env wire.Envelope) (stored wire.Envelope, payload []byte, dup bool, err error) {
	wait, err := s.StartRemote(ctx, env)
	if err != nil {
		return wire.Envelope{}, nil, false, err
	}
	return wait(ctx)
}

// StartRemote is StoreRemote in two steps: the checks and the proposal
// now (so that a link's messages enter the Raft log in the order they
// came, several at once), the wait for the commit later. ctx must last
// until the wait returns.
func (s *Service) StartRemote(ctx context.Context, env wire.Envelope) (func(context.Context) (wire.Envelope, []byte, bool, error), error) {
	from, to := env.From, env.To
	var err error
	if env.ID == 0 || env.Group != "" || strings.IndexByte(from, '@') < 0 || wire.ValidPeerID(from) != nil {
		err = fmt.Errorf("archive: a remote message needs an id and a qualified sender: %w", wire.ErrInvalid)
	} else if err = validUsers(to); err == nil {
		err = checkClientFields(env)
	}
	if err == nil {
		err = s.remoteRecipient(from, to)
		if errors.Is(err, wire.ErrNotFound) || errors.Is(err, wire.ErrForbidden) {
			// Refused for good (the sender's region is told): unless this
			// node lags, the recipient having signed up or lifted a block
			// through another node a moment ago.
			if err = s.catchUp(ctx, "recipient"); err == nil {
				err = s.remoteRecipient(from, to)
			}
		}
	}
	if err == nil {
		err = s.attachRemote(ctx, address.RegionOf(from), &env, to, "") // remotemedia.go
	}
	// The dedupe key is (sender, "@" + origin ID). A local client's cid
	// may start with '@' too, but its sender is never qualified, so the
	// two key spaces do not meet.
	key := "@" + env.ID.String()
	if err != nil {
		// A resend of a message stored before the recipient blocked
		// the sender is not refused: its region would mark it
		// undeliverable.
		if wait, ok := s.refusedRetry(from, to, "", key, env, err); ok {
			return wait, nil
		}
		s.count(false, err)
		return nil, err
	}
	payload := env.Marshal()
	first := s.start(ctx, env, payload, msgCmd{ID: env.ID, From: from, To: to, CID: key, Payload: payload})
	return func(ctx context.Context) (wire.Envelope, []byte, bool, error) {
		stored, payload, dup, err := first(ctx)
		if errors.Is(err, ErrIDTaken) {
			// Region numbers make IDs unique across regions, but two
			// regions misconfigured with one number (or a number changed
			// back) can still clash: the last resort. Refusing would stop
			// the link for good; the message is stored under an ID of ours
			// instead (the dedupe key stays the origin's), and the two
			// regions show it under different IDs.
			s.log.Warn("a message from another region clashes with a stored ID; stored under a new one",
				"from", from, "to", to, "origin_id", env.ID)
			env.ID = s.ids.Next()
			payload = env.Marshal()
			stored, payload, dup, err = s.start(ctx, env, payload, msgCmd{ID: env.ID, From: from, To: to, CID: key, Payload: payload})(ctx)
		}
		return stored, payload, dup, err
	}, nil
}

// remoteRecipient checks, on this node's state, that to (a user of this
// region) exists and has not blocked from (a user of another region).
func (s *Service) remoteRecipient(from, to string) error {
	if s.erasedHere(from) {
		return fmt.Errorf("archive: sender %q was erased: %w", from, wire.ErrForbidden)
	}
	ok, err := s.users.UserExists(to)
	switch {
	case err != nil:
		return fmt.Errorf("archive: looking up recipient %q: %w", to, err)
	case !ok:
		return fmt.Errorf("archive: recipient %q: %w", to, wire.ErrNotFound)
	case s.blocks != nil && s.blocks.IsBlocked(to, from):
		return fmt.Errorf("archive: %q has blocked %q: %w", to, from, wire.ErrForbidden)
	}
	return nil
}

// erasedHere tells whether uid, a user of another region, was erased
// here because its region erased it (the auth service's EraseRemote):
// nothing is sent to or taken from it any more.
func (s *Service) erasedHere(uid string) bool {
	d, ok := s.users.(interface{ Deleted(uid string) bool })
	return ok && d.Deleted(uid)
}

// replicatedDeletions is the auth service's DeletedIn (Deps.Users).
type replicatedDeletions interface {
	DeletedIn(tx *badger.Txn, uid string) (bool, error)
}

// refuseErasedPeer refuses, inside the FSM transaction, a direct message
// to or from a user of another region that this region erased (its
// region erased it and told us: services/auth EraseRemote). The checks
// before proposing (erasedHere) read this node's copy, which may not
// have applied the erasure yet, and such an erasure has no grace
// period: its steps may be done before the message commits, and
// nothing would take the message then. Deterministic (replicated keys
// only); writes nothing.
func refuseErasedPeer(tx *badger.Txn, st *fsmState, from, to string) error {
	if st.erasedIn == nil {
		return nil
	}
	if strings.IndexByte(to, '@') >= 0 {
		if gone, err := st.erasedIn(tx, to); err != nil {
			return err
		} else if gone {
			return fmt.Errorf("archive: recipient %q (erased): %w", to, wire.ErrNotFound)
		}
	}
	if strings.IndexByte(from, '@') >= 0 {
		if gone, err := st.erasedIn(tx, from); err != nil {
			return err
		} else if gone {
			return fmt.Errorf("archive: sender %q was erased: %w", from, wire.ErrForbidden)
		}
	}
	return nil
}
