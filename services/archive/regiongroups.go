package archive

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/edgechat/edgechat/internal/wire"
)

// StoreRemoteGroup stores a group message that arrived over a region
// link (bridge/region): env.ID is the origin region's ID, env.From the
// sender qualified with their region (bob@us, or carol@ap relayed by the
// group's home), env.Group the group as this region names it (gid when it
// lives here, gid@home for a mirror). The sender must be a member as this
// region knows the group. The origin's ID is the dedupe key, as for
// StoreRemote. Errors wrap wire.ErrForbidden (not a member),
// wire.ErrNotFound (no such group here), wire.ErrInvalid or
// wire.ErrUnavailable.
func (s *Service) StoreRemoteGroup(ctx context.Context, env wire.Envelope) (stored wire.Envelope, payload []byte, dup bool, err error) {
	from, gid := env.From, env.Group
	switch {
	case env.ID == 0 || strings.IndexByte(from, '@') < 0 || wire.ValidPeerID(from) != nil || env.To != "":
		err = fmt.Errorf("archive: a remote group message needs an id and a qualified sender: %w", wire.ErrInvalid)
	case wire.ValidGroupID(gid) != nil:
		err = fmt.Errorf("archive: group id %q: %w", gid, wire.ErrInvalid)
	case s.groups == nil:
		err = errNoGroups(gid)
	default:
		err = checkClientFields(env)
	}
	if err == nil && !s.groups.IsMember(gid, from) {
		// Skipped for good otherwise: unless this node lags, the member
		// added through another node a moment ago (as checkGroup).
		if err = s.catchUp(ctx, "group member"); err == nil && !s.groups.IsMember(gid, from) {
			err = fmt.Errorf("archive: %q is not a member of group %q here: %w", from, gid, wire.ErrForbidden)
		}
	}
	if err == nil {
		err = s.attachRemote(ctx, sourceOf(from, gid), &env, "", gid) // remotemedia.go
	}
	key := "@" + env.ID.String()
	if err != nil {
		// A resend of a message stored before the sender left the group
		// here is not refused (as StartRemote).
		if wait, ok := s.refusedRetry(from, "", gid, key, env, err); ok {
			return wait(ctx)
		}
		s.count(false, err)
		return wire.Envelope{}, nil, false, err
	}
	payload = env.Marshal() // mentions as the link named them for this region (bridge/region)
	stored, payload, dup, err = s.start(ctx, env, payload, msgCmd{ID: env.ID, From: from, Group: gid, CID: key, Payload: payload})(ctx)
	if errors.Is(err, ErrIDTaken) { // the last resort, as in StoreRemote
		s.log.Warn("a group message from another region clashes with a stored ID; stored under a new one",
			"from", from, "group", gid, "origin_id", env.ID)
		env.ID = s.ids.Next()
		payload = env.Marshal()
		stored, payload, dup, err = s.start(ctx, env, payload, msgCmd{ID: env.ID, From: from, Group: gid, CID: key, Payload: payload})(ctx)
	}
	return stored, payload, dup, err
}
