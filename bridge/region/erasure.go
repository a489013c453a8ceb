package region

// An account erased across links: bob's account is erased in us
// (services/auth/delete.go), and eu holds copies of what he had with
// its users (direct conversations, alice@eu's contact or block of
// bob@us, bob's relations mirrored there, a cached profile). Inside the
// first step of bob's erasure (before the users and archive erasers
// remove the keys that name the regions), StageErasure stages an
// erasure for every region that may hold something of him, derived
// from replicated keys only (node/erase.go): 'E' {"uid":"bob"} in the
// outbox, in commit order with the rest, durable like a message (a
// link that is down sends it when it comes back, within
// --link-retention). The link qualifies the user and sends it as a
// frame "erase" {"uid":"bob@us"}, alone in its batch: a region of an
// earlier version refuses a batch with a frame kind it does not know,
// as a whole (0x99, payload format invalid), and the link skips a
// refused batch, so the erasure must not take the messages around it
// with it. Such a region keeps its copies, as before.
//
// eu accepts it only from the user's own region (bob@us from us's
// link), commits one replicated decision (the Erasures dependency, the
// auth service's EraseRemote: bob@us becomes a deleted account there,
// due at once) and acknowledges; the leader's erasure sweeper then
// erases, in bounded steps, everything eu holds of bob@us, resuming
// after a leader change or a restart as a local erasure does.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/internal/address"
	"github.com/edgechat/edgechat/internal/wire"
)

// eraseMark starts an outbox entry that is an account's erasure.
const eraseMark = 'E'

// frameErase is the frame kind of an erasure.
const frameErase = "erase"

// Erasures commits, in this region, the erasure of a user of another
// region (uid is name@region): the auth service's EraseRemote. Once it
// returns nil the decision is committed; erasing follows.
type Erasures interface {
	EraseRemote(ctx context.Context, uid string) error
}

// linkErase is an erasure on the link.
type linkErase struct {
	UID string `json:"uid"` // staged plain, qualified on the link
}

// StageErasure stages the erasure of uid (a user of this region) for
// each of regions (other regions; this region, invalid names and
// repeats are left out), inside the FSM transaction of an erase step:
// deterministic, it decides from its arguments alone. The function
// returned wakes the links once the step committed.
func (b *Bridge) StageErasure(tx *badger.Txn, uid string, regions []string) (func(), error) {
	if wire.ValidUserID(uid) != nil {
		return nil, fmt.Errorf("region: erasure of %q: %w", uid, wire.ErrInvalid)
	}
	regions = slices.Clone(regions)
	slices.Sort(regions)
	regions = slices.Compact(regions)
	var staged []string
	entry := append([]byte{eraseMark}, mustJSON(linkErase{UID: uid})...)
	for _, r := range regions {
		if r == "" || r == b.cfg.Region || address.ValidRegion(r) != nil {
			continue
		}
		if err := stageRegion(tx, r, entry); err != nil {
			return nil, err
		}
		staged = append(staged, r)
	}
	if len(staged) == 0 {
		return nil, nil
	}
	return func() {
		for _, r := range staged {
			b.countNotice(r, "erasure", "staged")
			b.notify(r)
		}
	}, nil
}

// erasePayload is what the link publishes for a staged erasure.
func erasePayload(entry []byte, own string) ([]byte, error) {
	var e linkErase
	if err := json.Unmarshal(entry, &e); err != nil || wire.ValidUserID(e.UID) != nil {
		return nil, fmt.Errorf("not an erasure: %v", err)
	}
	e.UID = address.Qualify(e.UID, own)
	return mustJSON(e), nil
}

// parseErase reads an erasure region's link brought: a user of region,
// returned as named here (name@region).
func parseErase(payload []byte, region string) (string, error) {
	var e linkErase
	if err := json.Unmarshal(payload, &e); err != nil {
		return "", fmt.Errorf("region: link %s: not an erasure: %v: %w", region, err, wire.ErrInvalid)
	}
	u, err := address.Parse(e.UID)
	if err != nil || u.Region == "" || wire.ValidUserID(u.Name) != nil {
		return "", fmt.Errorf("region: link %s: erasure of %q: %w", region, e.UID, wire.ErrInvalid)
	}
	if u.Region != region {
		return "", fmt.Errorf("region: link %s: erasure of %q: not a user of %s: %w", region, e.UID, region, wire.ErrForbidden)
	}
	return u.Name + "@" + u.Region, nil
}

// receiveErase commits the erasure of a user of region.
func (b *Bridge) receiveErase(ctx context.Context, region string, payload []byte) error {
	uid, err := parseErase(payload, region)
	if err == nil && b.deps.Erasures == nil {
		err = fmt.Errorf("region: erasures across regions not served here: %w", wire.ErrInvalid)
	}
	if err == nil {
		err = b.deps.Erasures.EraseRemote(ctx, uid)
	}
	switch {
	case err == nil:
		b.countNotice(region, "erasure", "applied")
		b.log.Info("region link: an account of the link's region is erased; erasing what this region holds of it", "link", region, "uid", uid)
	case final(err):
		b.countNotice(region, "erasure", "refused")
		if errors.Is(err, wire.ErrForbidden) {
			b.log.Warn("region link: erasure refused", "link", region, "reason", err)
		}
	}
	return err
}
