package archive

import (
	"context"
	"errors"
	"fmt"

	"github.com/edgechat/edgechat/internal/snowflake"
	"github.com/edgechat/edgechat/internal/wire"
)

// errNoGroups is the refusal of every group operation when the node runs
// without a Groups dependency: as if the group did not exist.
func errNoGroups(gid string) error {
	return fmt.Errorf("archive: group %q: %w", gid, wire.ErrNotFound)
}

// SendGroup stores a message from a member to a group. env must already
// have passed wire.ParseEnvelope. It stamps a new ID, From and Group
// (clearing To), completes Mentions (see stampMentions), commits the
// message through the Raft log and returns the stored envelope and its
// exact JSON (the bytes to publish on wire.GroupTopic(gid); do not
// re-encode). A cid is unique per sender
// across direct and group messages alike: if (from, env.CID) was stored
// before, SendGroup returns that original message with dup=true and
// stores nothing, or, when the original is of another conversation,
// refuses (reusedCID, wire.ErrInvalid).
//
// Errors wrap wire.ErrInvalid (malformed user or group ID, cid),
// wire.ErrForbidden (from is not a member of gid), wire.ErrNotFound (the
// node has no groups) or wire.ErrUnavailable.
//
// Membership is checked here, on the proposing node, because the FSM
// handler cannot read the users service's keys: a member removed while
// their message is in flight may still get that one message stored.
func (s *Service) SendGroup(ctx context.Context, from, gid string, env wire.Envelope) (stored wire.Envelope, payload []byte, dup bool, err error) {
	wait, err := s.StartGroup(ctx, from, gid, env)
	if err != nil {
		return wire.Envelope{}, nil, false, err
	}
	return wait(ctx)
}

// StartGroup is SendGroup in two steps, as StartDirect is SendDirect.
func (s *Service) StartGroup(ctx context.Context, from, gid string, env wire.Envelope) (func(context.Context) (wire.Envelope, []byte, bool, error), error) {
	id := s.ids.Next() // before the check, as in StartDirect
	if err := s.checkGroup(ctx, from, gid, &env, id); err != nil {
		if wait, ok := s.refusedRetry(from, "", gid, env.CID, env, err); ok {
			return wait, nil
		}
		s.count(false, err)
		return nil, err
	}
	env.ID = id
	env.From, env.To, env.Group = from, "", gid
	stampMentions(&env)
	payload := env.Marshal()
	return s.start(ctx, env, payload, msgCmd{ID: env.ID, From: from, Group: gid, CID: env.CID, Payload: payload}), nil
}

// checkGroup runs SendGroup's checks and attaches a media message.
func (s *Service) checkGroup(ctx context.Context, from, gid string, env *wire.Envelope, id snowflake.ID) error {
	if err := validUsers(from); err != nil {
		return err
	}
	if wire.ValidGroupID(gid) != nil {
		return fmt.Errorf("archive: group id %q: %w", gid, wire.ErrInvalid)
	}
	if err := checkClientFields(*env); err != nil {
		return err
	}
	if s.groups == nil {
		return errNoGroups(gid)
	}
	if !s.groups.IsMember(gid, from) {
		// Joined through another node a moment ago?
		if err := s.catchUp(ctx, "group member"); err != nil {
			return err
		}
		if !s.groups.IsMember(gid, from) {
			return fmt.Errorf("archive: %q is not a member of group %q: %w", from, gid, wire.RefusedNotMember(gid))
		}
	}
	return s.attachMedia(ctx, from, env, "", gid, id)
}

// MarkGroupRead moves reader's read cursor in group gid forward to upTo
// (clamped to the group's highest message ID; it never moves back).
// Errors wrap wire.ErrInvalid, wire.ErrNotFound (reader is not a member,
// or the node has no groups: the same answer, so that group IDs do not
// leak) or wire.ErrUnavailable. A reader this node does not know as a
// member is refused only once the node has caught up with the cluster
// (catchUp): they may have been added through another node a moment ago.
func (s *Service) MarkGroupRead(ctx context.Context, reader, gid string, upTo snowflake.ID) error {
	if err := validUsers(reader); err != nil {
		return err
	}
	if _, err := s.memberConv(reader, gid); err != nil {
		if s.groups == nil || !errors.Is(err, wire.ErrNotFound) {
			return err
		}
		if err := s.catchUp(ctx, "group member"); err != nil {
			return err
		}
		if _, err := s.memberConv(reader, gid); err != nil {
			return err
		}
	}
	if upTo == 0 {
		return nil
	}
	cmd := cursorCmd{Reader: reader, Group: gid, UpTo: upTo}
	if _, err := s.prop.Propose(ctx, wire.CmdReadCursor, cmd.encode()); err != nil {
		return fmt.Errorf("archive: mark group read: %w", err)
	}
	return nil
}

// memberConv returns the conversation key of group gid for a member.
// Anyone else gets wire.ErrNotFound, as for a group that does not exist.
func (s *Service) memberConv(uid, gid string) (string, error) {
	if wire.ValidGroupID(gid) != nil {
		return "", fmt.Errorf("archive: group id %q: %w", gid, wire.ErrInvalid)
	}
	if s.groups == nil || !s.groups.IsMember(gid, uid) {
		return "", errNoGroups(gid)
	}
	return groupConv(gid), nil
}

// groupsOf lists uid's groups (none without a Groups dependency). IDs
// that are not valid group IDs are dropped: they would not name our keys
// unambiguously.
func (s *Service) groupsOf(uid string) ([]string, error) {
	if s.groups == nil {
		return nil, nil
	}
	gids, err := s.groups.GroupsOf(uid)
	if err != nil {
		return nil, fmt.Errorf("archive: groups of %q: %w", uid, err)
	}
	out := gids[:0:0]
	for _, g := range gids {
		if wire.ValidGroupID(g) == nil {
			out = append(out, g)
		}
	}
	return out, nil
}
