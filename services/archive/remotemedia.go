package archive

import (
	"context"
	"fmt"

	"github.com/edgechat/edgechat/internal/address"
	"github.com/edgechat/edgechat/internal/snowflake"
	"github.com/edgechat/edgechat/internal/wire"
)

// RemoteMedia records the media that a message from another region
// carries (services/media AttachRemote): the media is named
// {id}@{region} here, the recipient (peer) or group (gid) may read it,
// and its bytes are fetched from source, the region the message came
// from. An archive whose Media lacks it refuses media from other regions.
type RemoteMedia interface {
	AttachRemote(ctx context.Context, own, source, from string, m *wire.Media, peer, gid string, msg snowflake.ID) error
}

// attachRemote has the media service record the media of a message from
// another region, before the message is proposed: env.Media.ID becomes
// the ID of this region's record.
func (s *Service) attachRemote(ctx context.Context, source string, env *wire.Envelope, peer, gid string) error {
	if env.Type != wire.TypeMedia {
		return nil
	}
	rm, ok := s.media.(RemoteMedia)
	if !ok || s.regions == nil || env.Media == nil {
		return fmt.Errorf("archive: media messages from another region are not handled here: %w", wire.ErrInvalid)
	}
	if err := rm.AttachRemote(ctx, s.regions.Local(), source, env.From, env.Media, peer, gid, env.ID); err != nil {
		return fmt.Errorf("archive: media %q from %s: %w", env.Media.ID, source, err)
	}
	return nil
}

// sourceOf is the region a group message of another region came from:
// the group's home for a mirror (gid@home), else the sender's region.
func sourceOf(from, gid string) string {
	if home := address.RegionOf(gid); home != "" {
		return home
	}
	return address.RegionOf(from)
}
