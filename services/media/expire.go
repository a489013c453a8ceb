package media

import (
	"context"
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/internal/snowflake"
	"github.com/edgechat/edgechat/internal/wire"
)

// Retention (issue 11): when the archive's retention expires a
// conversation's messages below a cutoff, the media they carried expire
// with them unless a newer message of the conversation, or another
// conversation, still carries them. The archive's sweeper (the leader)
// lists the media IDs of the messages about to expire and calls Expire
// before it deletes them; CmdMediaExpire then, for each ID, deterministic
// and bounded (expireBatch IDs per command, each a few keys):
//
//   - revokes the conversation's grant (gu/{id}/{peer} of a direct
//     conversation, the owner's own for notes to oneself; gg/{id}/{gid}
//     of a group) when the newest message it was granted by is below the
//     cutoff; a grant written before grants kept their message (an empty
//     value) counts as sent when the record was created;
//   - marks the record Erased when that leaves it with no grant at all,
//     so that nobody reads it any more (the uploader neither: every
//     message that carried it expired) and the sweeper deletes its
//     files from every tier, then the record (CmdMediaDelete), as for an
//     erased account (erase.go).
//
// Grants of other conversations stay, and so does the media they carry.
// A record that was never sent, is not found or is Erased already is
// skipped: a repeated command changes nothing.

// expireBatch bounds the media IDs of one CmdMediaExpire.
const expireBatch = 256

// expireCmd is the payload of wire.CmdMediaExpire: the conversation is
// the direct one of Users (two user IDs, the same twice for notes to
// oneself) or group Group.
type expireCmd struct {
	Users  []string     `json:"users,omitempty"`
	Group  string       `json:"group,omitempty"`
	Cutoff snowflake.ID `json:"cutoff"`
	IDs    []string     `json:"ids"`
}

// ExpireResult is what a CmdMediaExpire did.
type ExpireResult struct {
	Revoked, Erased int
}

// Expire revokes what the conversation (direct between a and b, or
// group gid when gid is not empty) was granted of ids by messages below
// cutoff, and erases the media left without grants (see above), in
// commands of expireBatch IDs.
func (s *Service) Expire(ctx context.Context, a, b, gid string, cutoff snowflake.ID, ids []string) (ExpireResult, error) {
	var total ExpireResult
	c := expireCmd{Group: gid, Cutoff: cutoff}
	if gid == "" {
		c.Users = []string{a, b}
	}
	for len(ids) > 0 {
		n := min(len(ids), expireBatch)
		c.IDs = ids[:n]
		ids = ids[n:]
		v, err := s.propose(ctx, wire.CmdMediaExpire, c)
		if err != nil {
			return total, fmt.Errorf("media: expire: %w", err)
		}
		if r, ok := v.(*ExpireResult); ok {
			total.Revoked += r.Revoked
			total.Erased += r.Erased
		}
	}
	s.m.expired.Add(float64(total.Erased))
	return total, nil
}

// ExpireSent is Expire for the archive (archive.Media).
func (s *Service) ExpireSent(ctx context.Context, a, b, gid string, cutoff snowflake.ID, ids []string) error {
	_, err := s.Expire(ctx, a, b, gid, cutoff, ids)
	return err
}

func (s *Service) applyExpire(tx *badger.Txn, _ fsm.Position, payload []byte) (any, error) {
	var c expireCmd
	if err := decode(payload, &c); err != nil {
		return nil, err
	}
	switch {
	case c.Cutoff == 0 || len(c.IDs) > expireBatch:
		return nil, fmt.Errorf("%w: expire: cutoff %d, %d ids", errBadCommand, c.Cutoff, len(c.IDs))
	case c.Group != "" && (len(c.Users) != 0 || wire.ValidGroupID(c.Group) != nil):
		return nil, fmt.Errorf("%w: expire: group %q", errBadCommand, c.Group)
	case c.Group == "" && (len(c.Users) != 2 || wire.ValidPeerID(c.Users[0]) != nil || wire.ValidPeerID(c.Users[1]) != nil):
		return nil, fmt.Errorf("%w: expire: users %q", errBadCommand, c.Users)
	}
	for _, id := range c.IDs {
		if !validMediaID(id) {
			return nil, fmt.Errorf("%w: id %q", errBadCommand, id)
		}
	}
	res := &ExpireResult{}
	for _, id := range c.IDs {
		r, err := getRecord(tx, id)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if r.Erased || !r.Sent {
			continue
		}
		var k []byte
		switch {
		case c.Group != "":
			k = grantGroupKey(id, c.Group)
		case r.Owner == c.Users[0]:
			k = grantUserKey(id, c.Users[1])
		case r.Owner == c.Users[1]:
			k = grantUserKey(id, c.Users[0])
		default:
			continue // not sent in this conversation (its sender uploads)
		}
		it, err := tx.Get(k)
		switch {
		case errors.Is(err, badger.ErrKeyNotFound):
			// Not granted here (any more): nothing to revoke, and the
			// record is erased below only if nothing grants it at all.
		case err != nil:
			return nil, err
		default:
			var sent snowflake.ID
			if err := it.Value(func(v []byte) error { sent = sentOf(v); return nil }); err != nil {
				return nil, err
			}
			if sent == 0 {
				sent = idAt(r.CreatedAt)
			}
			if sent >= c.Cutoff {
				continue // a newer message of the conversation carries it
			}
			if err := tx.Delete(k); err != nil {
				return nil, err
			}
			if err := unindexGrants(tx, [][]byte{k}); err != nil {
				return nil, err
			}
			res.Revoked++
		}
		left := false
		for _, p := range [][]byte{[]byte(prefixGrantUser + id + "/"), grantGroupPrefix(id)} {
			if left, err = hasKeys(tx, p); err != nil || left {
				break
			}
		}
		if err != nil {
			return nil, err
		}
		if left {
			continue
		}
		r.Erased = true
		if err := fsm.SetJSON(tx, recordKey(id), r); err != nil {
			return nil, err
		}
		res.Erased++
	}
	return res, nil
}
