package media

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/internal/snowflake"
	"github.com/edgechat/edgechat/internal/wire"
)

// Attach is AttachSent for a message sent now (the ID a message stamped
// now would get, without its machine and sequence bits).
func (s *Service) Attach(ctx context.Context, sender string, m *wire.Media, peer, gid string) error {
	return s.AttachSent(ctx, sender, m, peer, gid, idAt(s.now()))
}

// AttachSent checks that m names a ready upload of sender and fills m
// with what clients need to render it; then the conversation may read
// it: the sender and peer of a direct message, or the members of group
// gid (its members when they read: someone who joins later may read what
// the group was sent, like its history). msg is the ID of the message
// that carries it: the conversation's grant keeps the highest (see
// grantCmd), so that retention revokes the grant only once every message
// of the conversation that sent it expired (expire.go). Errors wrap
// wire.ErrMediaNotReady. The archive calls it before storing a media
// message (archive.Media).
func (s *Service) AttachSent(ctx context.Context, sender string, m *wire.Media, peer, gid string, msg snowflake.ID) error {
	rec, err := s.Get(m.ID)
	if errors.Is(err, ErrNotFound) || (err == nil && (rec.Owner != sender || rec.Status != StatusReady || rec.Erased)) {
		return fmt.Errorf("%w (%s)", wire.ErrMediaNotReady, m.ID)
	}
	if err != nil {
		return err
	}
	g := grantCmd{ID: rec.ID, Sent: msg}
	if gid != "" {
		g.Groups = []string{gid}
	} else {
		// A note to oneself grants the owner: the grant keeps when it
		// was last sent there (the owner reads it anyway).
		g.Users = []string{peer}
	}
	if !rec.Sent || !s.granted(g) {
		if _, err := s.propose(ctx, wire.CmdMediaGrant, g); err != nil {
			return fmt.Errorf("media: grant %s: %w", rec.ID, err)
		}
	}
	*m = rec.Wire()
	return nil
}

// idAt is the lowest message ID of the millisecond of t.
func idAt(t time.Time) snowflake.ID {
	if !t.After(snowflake.Epoch) {
		return 0
	}
	return snowflake.Make(uint64(t.Sub(snowflake.Epoch).Milliseconds()), 0, 0)
}

// granted reports whether every grant of g is in place already, sent at
// or after g.Sent (a media sent twice in the same message costs no
// second proposal; a newer message moves the grant's time).
func (s *Service) granted(g grantCmd) bool {
	all := true
	_ = s.db.View(func(tx *badger.Txn) error {
		for _, k := range g.keys() {
			it, err := tx.Get(k)
			if err != nil {
				all = false
				continue
			}
			_ = it.Value(func(v []byte) error {
				if sentOf(v) < g.Sent {
					all = false
				}
				return nil
			})
		}
		return nil
	})
	return all
}

// keys are the grant keys g writes.
func (g grantCmd) keys() [][]byte {
	var out [][]byte
	for _, u := range g.Users {
		out = append(out, grantUserKey(g.ID, u))
	}
	for _, gid := range g.Groups {
		out = append(out, grantGroupKey(g.ID, gid))
	}
	return out
}

// sentOf is the message ID a grant value records; 0 for a grant written
// before grants kept it (empty).
func sentOf(v []byte) snowflake.ID {
	if len(v) != 8 {
		return 0
	}
	return snowflake.ID(binary.BigEndian.Uint64(v))
}
