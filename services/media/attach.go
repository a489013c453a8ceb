package media

import (
	"context"
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/internal/wire"
)

// Attach checks that m names a ready upload of sender and fills m with
// what clients need to render it; then the conversation may read it: the
// sender and peer of a direct message, or the members of group gid (its
// members when they read: someone who joins later may read what the
// group was sent, like its history). Errors wrap wire.ErrMediaNotReady.
// The archive calls it before storing a media message (archive.Media).
func (s *Service) Attach(ctx context.Context, sender string, m *wire.Media, peer, gid string) error {
	rec, err := s.Get(m.ID)
	if errors.Is(err, ErrNotFound) || (err == nil && (rec.Owner != sender || rec.Status != StatusReady)) {
		return fmt.Errorf("%w (%s)", wire.ErrMediaNotReady, m.ID)
	}
	if err != nil {
		return err
	}
	g := grantCmd{ID: rec.ID}
	if gid != "" {
		g.Groups = []string{gid}
	} else if peer != sender {
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

// granted reports whether every grant of g is in place already (a media
// sent twice to the same conversation costs no second proposal).
func (s *Service) granted(g grantCmd) bool {
	all := true
	_ = s.db.View(func(tx *badger.Txn) error {
		for _, u := range g.Users {
			if _, err := tx.Get(grantUserKey(g.ID, u)); err != nil {
				all = false
			}
		}
		for _, gid := range g.Groups {
			if _, err := tx.Get(append(grantGroupPrefix(g.ID), gid...)); err != nil {
				all = false
			}
		}
		return nil
	})
	return all
}
