package push

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/internal/wire"
)

// Opt-ins to large groups. In a group larger than --push-group-limit the
// bridge pushes only mentions and replies, unless the member opted in to
// every message of that group. Each opt-in is kept twice, in one
// command: by group first (what the bridge reads, one prefix scan per
// message) and by user first (what the user lists, and what the cap
// counts). Membership is not checked here: the users service owns it and
// the bridge checks it at send time, so an opt-in outlives leaving the
// group harmlessly and works again on rejoining.
const (
	prefixOptIn     = "r/push/o/"  // + gid + "/" + uid → GroupOptIn
	prefixUserOptIn = "r/push/oi/" // + uid + "/" + gid → GroupOptIn
)

// MaxOptIns is the most groups a user may opt in to: a bound on the keys
// one user adds and on the scan that counts them.
const MaxOptIns = 1000

func optInKey(gid, uid string) []byte     { return []byte(prefixOptIn + gid + "/" + uid) }
func userOptInKey(uid, gid string) []byte { return []byte(prefixUserOptIn + uid + "/" + gid) }

// GroupOptIn is a user's opt-in to every message of a large group.
type GroupOptIn struct {
	Group     string    `json:"group"`
	OptedInAt time.Time `json:"optedInAt"`
}

// optInCmd opts UID in to (or, Delete, out of) group GID.
type optInCmd struct {
	UID    string    `json:"uid"`
	GID    string    `json:"gid"`
	Delete bool      `json:"delete,omitempty"`
	At     time.Time `json:"at"`
}

// ValidGroup checks a group ID of the opt-in API.
func ValidGroup(gid string) error {
	if wire.ValidGroupID(gid) != nil {
		return fmt.Errorf("%w: %q (1 to 64 letters, digits, '_' and '-')", ErrInvalidGroup, gid)
	}
	return nil
}

// applyOptIn writes or removes both keys of an opt-in. Opting in again
// keeps the first optedInAt (the command is idempotent, so a retried
// request answers the same); the cap is counted on the user's keys,
// before any write, so every replica refuses the same command.
func (s *Service) applyOptIn(tx *badger.Txn, _ fsm.Position, payload []byte) (any, error) {
	var c optInCmd
	if err := decodeCmd(payload, &c); err != nil {
		return nil, err
	}
	if wire.ValidUserID(c.UID) != nil {
		return nil, fmt.Errorf("%w: bad uid", errBadCommand)
	}
	if err := ValidGroup(c.GID); err != nil {
		return nil, err
	}
	var old GroupOptIn
	found, err := fsm.GetJSON(tx, userOptInKey(c.UID, c.GID), &old)
	if err != nil {
		return nil, err
	}
	if c.Delete {
		if !found {
			return nil, nil
		}
		if err := tx.Delete(userOptInKey(c.UID, c.GID)); err != nil {
			return nil, err
		}
		return nil, tx.Delete(optInKey(c.GID, c.UID))
	}
	if found {
		return old, nil
	}
	if countPrefix(tx, prefixUserOptIn+c.UID+"/") >= MaxOptIns {
		return nil, fmt.Errorf("%w: at most %d", ErrTooManyOptIns, MaxOptIns)
	}
	o := GroupOptIn{Group: c.GID, OptedInAt: c.At}
	if err := fsm.SetJSON(tx, userOptInKey(c.UID, c.GID), o); err != nil {
		return nil, err
	}
	return o, fsm.SetJSON(tx, optInKey(c.GID, c.UID), o)
}

// OptIn opts uid in to every message of group gid, however large it is.
// Opting in again keeps the first optedInAt. Errors wrap ErrInvalidGroup,
// ErrTooManyOptIns or wire.ErrUnavailable. uid need not be a member (see
// the opt-in keys).
func (s *Service) OptIn(ctx context.Context, uid, gid string) (GroupOptIn, error) {
	if err := ValidGroup(gid); err != nil {
		return GroupOptIn{}, err
	}
	now := s.now().UTC()
	v, err := s.propose(ctx, wire.CmdPushGroupOptIn, optInCmd{UID: uid, GID: gid, At: now})
	if err != nil {
		return GroupOptIn{}, fmt.Errorf("push: opt in: %w", err)
	}
	if o, ok := v.(GroupOptIn); ok {
		return o, nil
	}
	// The value did not survive a forwarded proposal: read back.
	var o GroupOptIn
	var found bool
	err = s.db.View(func(tx *badger.Txn) (err error) {
		found, err = fsm.GetJSON(tx, userOptInKey(uid, gid), &o)
		return err
	})
	if err != nil {
		return GroupOptIn{}, fmt.Errorf("push: read opt-in: %w", err)
	}
	if !found { // not applied here yet
		return GroupOptIn{Group: gid, OptedInAt: now}, nil
	}
	return o, nil
}

// OptOut removes uid's opt-in to gid; one that does not exist is fine.
func (s *Service) OptOut(ctx context.Context, uid, gid string) error {
	if err := ValidGroup(gid); err != nil {
		return err
	}
	if _, err := s.propose(ctx, wire.CmdPushGroupOptIn, optInCmd{UID: uid, GID: gid, Delete: true, At: s.now().UTC()}); err != nil {
		return fmt.Errorf("push: opt out: %w", err)
	}
	return nil
}

// OptedIn reports whether uid opted in to every message of gid.
func (s *Service) OptedIn(uid, gid string) (bool, error) {
	var found bool
	err := s.db.View(func(tx *badger.Txn) error {
		_, err := tx.Get(optInKey(gid, uid))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		found = err == nil
		return err
	})
	if err != nil {
		return false, fmt.Errorf("push: read opt-in: %w", err)
	}
	return found, nil
}

// GroupOptIns lists the users who opted in to gid, sorted: one prefix
// scan, so that the bridge can mark a large group's opted-in members per
// message without a lookup per member.
func (s *Service) GroupOptIns(gid string) ([]string, error) {
	if wire.ValidGroupID(gid) != nil {
		return nil, nil // no group has that ID; and "a/" must not scan into another group's keys
	}
	prefix := prefixOptIn + gid + "/"
	var out []string
	err := s.db.View(func(tx *badger.Txn) error {
		it := tx.NewIterator(badger.IteratorOptions{Prefix: []byte(prefix)})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			out = append(out, strings.TrimPrefix(string(it.Item().Key()), prefix))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("push: read opt-ins: %w", err)
	}
	return out, nil
}

// OptIns lists uid's opt-ins, in group order.
func (s *Service) OptIns(uid string) ([]GroupOptIn, error) {
	var out []GroupOptIn
	err := s.db.View(func(tx *badger.Txn) error {
		it := tx.NewIterator(badger.IteratorOptions{Prefix: []byte(prefixUserOptIn + uid + "/"), PrefetchValues: true})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			var o GroupOptIn
			if err := it.Item().Value(func(b []byte) error { return json.Unmarshal(b, &o) }); err != nil {
				return err
			}
			out = append(out, o)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("push: read opt-ins: %w", err)
	}
	return out, nil
}
