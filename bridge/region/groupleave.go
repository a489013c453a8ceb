package region

// A member of another region leaves a group (issue 14): bob of us leaves
// k3x9@eu. us takes him out of its mirror and, in the same FSM
// transaction, StageGroupLeave puts the request in eu's outbox (after
// whatever us staged for eu before, in commit order, durable like a
// message): $link/us/gleave {"group":"k3x9@eu","uid":"bob@us"} (a frame
// "gleave" in a batch). eu checks that the group is its own and the user
// one of us's, and commits the removal (Leaver, the users service's
// LeaveRemote: bob "removes himself"), which stages the group's new state
// for every region with members as any change does; a request of someone
// who is no longer a member is done already. The request carries its
// place in us's outbox (seq): a resend of it is skipped at home (users
// linkseq.go), as it may come after alice added bob again.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/internal/address"
	"github.com/edgechat/edgechat/internal/wire"
)

// leaveMark starts an outbox entry that is a member's leave.
const leaveMark = 'L'

// GroupLeaveTopic is the topic a link publishes members' leaves on.
func GroupLeaveTopic(fromRegion string) string { return LinkPrefix + fromRegion + "/gleave" }

// Leaver commits, at home, a remote member's leave (the users service's
// LeaveRemote): gid a group of this region, uid name@region, seq the
// leave's place in the outbox of uid's region (a resend, at or below the
// last one applied, changes nothing; 0: not told).
type Leaver interface {
	LeaveRemote(ctx context.Context, gid, uid string, seq uint64) error
}

// linkLeave is a leave on the link.
type linkLeave struct {
	Group string `json:"group"` // gid@home
	UID   string `json:"uid"`   // as the sending region names them: staged plain, qualified on the link
	// Seq is its place in the sending region's outbox for the home, from
	// 1 (linkPayload): the home skips a resent leave by it. 0: not told.
	Seq uint64 `json:"seq,omitempty"`
}

// StageGroupLeave is the users service's LeaveStager: inside the FSM
// transaction of uid's leave of mirror gid (gid@home), it stages the
// request for the home. seq is the seq the request will carry on the
// link (its place in the outbox, from 1): the home's group states tell
// the last one it applied (users RemoteGroup.Leaves).
func (b *Bridge) StageGroupLeave(tx *badger.Txn, gid, uid string) (seq uint64, after func(), err error) {
	home := address.RegionOf(gid)
	if address.ValidRegion(home) != nil || wire.ValidUserID(uid) != nil {
		return 0, nil, fmt.Errorf("region: leave of %q by %q: %w", gid, uid, wire.ErrInvalid)
	}
	pos, _, err := getU64(tx, nextKey(home))
	if err != nil {
		return 0, nil, err
	}
	entry := append([]byte{leaveMark}, mustJSON(linkLeave{Group: gid, UID: uid})...)
	if err := stageRegion(tx, home, entry); err != nil {
		return 0, nil, err
	}
	return pos + 1, b.wake([]string{home}), nil
}

// leavePayload is what the link publishes for a staged leave, seq its
// place in the outbox (from 1).
func leavePayload(entry []byte, own string, seq uint64) ([]byte, error) {
	var l linkLeave
	if err := json.Unmarshal(entry, &l); err != nil || wire.ValidUserID(l.UID) != nil {
		return nil, fmt.Errorf("not a leave: %v", err)
	}
	l.UID = address.Qualify(l.UID, own)
	l.Seq = seq
	return mustJSON(l), nil
}

// parseLeave reads a leave that region's link brought to this region
// (local): a group of ours, a user of region. It returns the group's ID
// here, the user as named here (name@region) and the leave's seq (0 from
// a region of an earlier version).
func parseLeave(local, region string, payload []byte) (gid, uid string, seq uint64, err error) {
	var l linkLeave
	if err := json.Unmarshal(payload, &l); err != nil {
		return "", "", 0, fmt.Errorf("region: link %s: not a leave: %v: %w", region, err, wire.ErrInvalid)
	}
	gid, ok := strings.CutSuffix(l.Group, "@"+local)
	u, uerr := address.Parse(l.UID)
	if !ok || wire.ValidGroupID(gid) != nil || strings.IndexByte(gid, '@') >= 0 || uerr != nil || wire.ValidUserID(u.Name) != nil {
		return "", "", 0, fmt.Errorf("region: link %s: leave %q of %q: %w", region, l.UID, l.Group, wire.ErrInvalid)
	}
	if u.Region != region {
		return "", "", 0, fmt.Errorf("region: link %s: leave of %q: not a user of %s: %w", region, l.UID, region, wire.ErrForbidden)
	}
	return gid, l.UID, l.Seq, nil
}

// receiveLeave commits the leave of a member of region.
func (b *Bridge) receiveLeave(ctx context.Context, region string, payload []byte) error {
	lv, ok := b.deps.Mirrors.(Leaver)
	if !ok {
		b.count(region, "invalid")
		return fmt.Errorf("region: link %s: groups across regions not configured here: %w", region, wire.ErrInvalid)
	}
	gid, uid, seq, err := parseLeave(b.cfg.Region, region, payload)
	if err != nil {
		b.count(region, resultOf(err))
		if errors.Is(err, wire.ErrForbidden) {
			b.log.Warn("region link: leave refused", "link", region, "reason", err)
		}
		return err
	}
	if err := lv.LeaveRemote(ctx, gid, uid, seq); err != nil {
		b.count(region, resultOf(err))
		return err
	}
	b.count(region, "group_leave")
	return nil
}
