package archive

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/cluster/featurelevel"
	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/internal/address"
	"github.com/edgechat/edgechat/internal/snowflake"
	"github.com/edgechat/edgechat/internal/wire"
)

// Undeliverable messages (issue 14): a direct message to a user of
// another region is committed here (the sender's PUBACK) and handed over
// later; when that region refuses it for good (no such user there,
// blocked, not a message it accepts) it sends back a notice
// (bridge/region notices.go) and this region commits it
// (CmdUndeliverable): the stored envelope gets
// "status":"undeliverable","reason":{reason} (in history and sync, as
// later readers read it) and the sender's devices get
// {"type":"undeliverable","id":...,"to":"bob@us","reason":...} on
// user/{sender}/events, once (a notice sent again changes nothing).
// So for a message to a group of another region, committed here in the
// group's mirror, that the group's home refuses (the sender was removed
// while the link was down): the event names "group" instead of "to".
// A message this region's link drops, older than --link-retention
// while the other region was unreachable, is marked so too by the link
// itself (reason "expired", from feature level 4; bridge/region
// expirytold.go).

// Reasons of an undeliverable message.
const (
	ReasonNoSuchUser = "no_such_user" // no such user in that region
	ReasonForbidden  = "forbidden"    // the recipient blocked the sender (what a local sender is told: 0x87 / 403), or the region refused the sender
	ReasonInvalid    = "invalid"      // a message that region does not accept (e.g. media across regions)
	// ReasonExpired: this region's link dropped the message, older than
	// --link-retention, while the other region was unreachable (no
	// notice of another region: the link's own; feature level 4).
	ReasonExpired = "expired"
)

// ValidReason tells the reasons a notice may carry.
func ValidReason(r string) bool {
	return r == ReasonNoSuchUser || r == ReasonForbidden || r == ReasonInvalid || r == ReasonExpired
}

// errExpiredBelowLevel refuses the reason "expired" below feature level
// 4: the sender is then not told (as in earlier versions).
var errExpiredBelowLevel = fmt.Errorf("archive: undeliverable reason %q below feature level %d: %w",
	ReasonExpired, featurelevel.ExpiredUndeliverable, wire.ErrInvalid)

// StatusUndeliverable is the status of a message another region refused.
const StatusUndeliverable = "undeliverable"

// undeliverableCmd is CmdUndeliverable's payload: a direct message (To)
// or a group message (Group).
type undeliverableCmd struct {
	ID     snowflake.ID `json:"id"`
	From   string       `json:"from"` // the sender, a user of this region
	To     string       `json:"to"`   // name@region
	Group  string       `json:"group,omitempty"`
	Reason string       `json:"reason"`
	// V is 1 in a command proposed since sealed messages are checked:
	// Checked then tells that the proposer read the message from its
	// segment and found it from's to To (or Group). The FSM cannot read
	// segments, so it marks a sealed message only when Checked (or for a
	// command of before, V 0, as it did then).
	V       int  `json:"v,omitempty"`
	Checked bool `json:"checked,omitempty"`
}

func (c undeliverableCmd) check() error {
	bad := c.ID == 0 || wire.ValidUserID(c.From) != nil || !ValidReason(c.Reason)
	if c.Group != "" {
		// A group of another region (gid@home), as its mirror here names it.
		bad = bad || c.To != "" || address.RegionOf(c.Group) == "" || wire.ValidGroupID(c.Group) != nil
	} else {
		bad = bad || address.RegionOf(c.To) == "" || wire.ValidPeerID(c.To) != nil
	}
	if bad {
		return fmt.Errorf("archive: undeliverable notice %d from %q to %q%q reason %q: %w", c.ID, c.From, c.To, c.Group, c.Reason, wire.ErrInvalid)
	}
	return nil
}

// conv is the conversation of the message.
func (c undeliverableCmd) conv() string {
	if c.Group != "" {
		return groupConv(c.Group)
	}
	return directConv(c.From, c.To)
}

// undeliverableResult is what applyUndeliverable returns.
type undeliverableResult struct {
	changed bool // the status was set now (not before)
}

// MarkUndeliverable records that the region of to refused message id,
// sent by from (a user of this region) to to (name@region), for good,
// and tells the sender's devices when it was not known before.
// wire.ErrNotFound: no such message of from to to here (a notice that
// names someone else's message, or one retention deleted); a message
// already sealed into a segment keeps no status but the event is sent.
func (s *Service) MarkUndeliverable(ctx context.Context, id snowflake.ID, from, to, reason string) error {
	return s.markUndeliverable(ctx, undeliverableCmd{ID: id, From: from, To: to, Reason: reason})
}

// MarkGroupUndeliverable records that the home of group (gid@home, a
// group of another region as its mirror here names it) refused message
// id of from (a user of this region) for good, as MarkUndeliverable
// does for a direct message; the sender's event names the group
// instead of "to".
func (s *Service) MarkGroupUndeliverable(ctx context.Context, id snowflake.ID, from, group, reason string) error {
	return s.markUndeliverable(ctx, undeliverableCmd{ID: id, From: from, Group: group, Reason: reason})
}

func (s *Service) markUndeliverable(ctx context.Context, c undeliverableCmd) error {
	id, from := c.ID, c.From
	if err := c.check(); err != nil {
		return err
	}
	if c.Reason == ReasonExpired && featurelevel.Of(s.db) < featurelevel.ExpiredUndeliverable {
		return errExpiredBelowLevel // applyUndeliverable refuses it too
	}
	if err := s.checkSealedNotice(ctx, &c); err != nil {
		return err
	}
	b, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("archive: encode: %w", err)
	}
	v, err := s.prop.Propose(ctx, wire.CmdUndeliverable, b)
	if err != nil {
		return err
	}
	if r, ok := v.(undeliverableResult); ok && r.changed {
		fields := map[string]any{"type": "undeliverable", "id": id.String(), "reason": c.Reason}
		if c.Group != "" {
			fields["group"] = c.Group
		} else {
			fields["to"] = c.To
		}
		ev, _ := json.Marshal(fields)
		if err := s.pub.Publish(wire.Outbound{Topic: "user/" + from + "/events", Payload: ev, QoS: 1}); err != nil {
			s.log.Warn("undeliverable event not published (the status is stored)", "from", from, "id", id, "err", err)
		}
	}
	return nil
}

// checkSealedNotice checks, before c is proposed, a notice about a
// message that is no longer hot here: the FSM (applyUndeliverable)
// checks a hot message's sender but cannot read a segment, and an ID in
// a sealed range is not enough (it may be the peer's message, or no
// message). The message is read from its segment and must be c.From's
// to c.To (or c.Group); then c is marked Checked. wire.ErrNotFound: it is
// not (or no longer readable); wire.ErrUnavailable: the segment could
// not be read now (the link sends the notice again).
func (s *Service) checkSealedNotice(ctx context.Context, c *undeliverableCmd) error {
	c.V = 1
	conv := c.conv()
	var sealed bool
	if err := s.db.View(func(tx *badger.Txn) error {
		if _, err := tx.Get(undeliverableKey(conv, c.ID)); err == nil {
			return nil // a notice sent again: nothing changes
		} else if !errors.Is(err, badger.ErrKeyNotFound) {
			return err
		}
		if _, err := tx.Get(convKey(conv, c.ID)); !errors.Is(err, badger.ErrKeyNotFound) {
			return err // hot (the FSM checks it), or a read error
		}
		var err error
		_, sealed, err = findSealed(tx, conv, c.ID)
		return err
	}); err != nil {
		return fmt.Errorf("archive: undeliverable: %v: %w", err, wire.ErrUnavailable)
	}
	if !sealed {
		return nil // hot, marked before, or unknown here: the FSM decides
	}
	body, err := s.sealedMessage(ctx, conv, c.ID)
	if errors.Is(err, ErrSegmentCorrupt) || errors.Is(err, badger.ErrKeyNotFound) {
		return fmt.Errorf("archive: undeliverable: no sealed message %d in %s: %v: %w", c.ID, conv, err, wire.ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("archive: undeliverable: reading sealed message %d of %s: %v: %w", c.ID, conv, err, wire.ErrUnavailable)
	}
	var m struct {
		From  string `json:"from"`
		To    string `json:"to"`
		Group string `json:"group"`
	}
	if json.Unmarshal(body, &m) != nil || m.From != c.From || m.To != c.To || m.Group != c.Group {
		return fmt.Errorf("archive: undeliverable: sealed message %d is not %s's in %s: %w", c.ID, c.From, conv, wire.ErrNotFound)
	}
	c.Checked = true
	return nil
}

func applyUndeliverable(tx *badger.Txn, _ fsm.Position, payload []byte) (any, error) {
	var c undeliverableCmd
	if err := json.Unmarshal(payload, &c); err != nil {
		return nil, fmt.Errorf("archive: undeliverable: %v: %w", err, wire.ErrInvalid)
	}
	if err := c.check(); err != nil {
		return nil, err
	}
	if c.Reason == ReasonExpired {
		// A node of an earlier version refuses the reason: so does every
		// node below the level where every member takes it.
		if ok, err := featurelevel.AtLeast(tx, featurelevel.ExpiredUndeliverable); err != nil || !ok {
			return nil, cmp.Or(err, errExpiredBelowLevel)
		}
	}
	conv := c.conv()
	// A notice sent again, whether the message is hot or sealed since.
	mk := undeliverableKey(conv, c.ID)
	if _, err := tx.Get(mk); err == nil {
		return undeliverableResult{}, nil
	} else if !errors.Is(err, badger.ErrKeyNotFound) {
		return nil, err
	}
	ck := convKey(conv, c.ID)
	it, err := tx.Get(ck)
	if errors.Is(err, badger.ErrKeyNotFound) {
		if _, sealed, serr := findSealed(tx, conv, c.ID); serr == nil && sealed {
			if c.V >= 1 && !c.Checked {
				// Hot when the proposer looked, sealed since: it checks
				// the sealed message when the notice is sent again.
				return nil, fmt.Errorf("archive: undeliverable: message %d of %s sealed since the notice was checked: %w", c.ID, conv, wire.ErrUnavailable)
			}
			// Sealed: the segment keeps no status, but the mark makes the
			// sender told once.
			if err := tx.Set(mk, nil); err != nil {
				return nil, err
			}
			return undeliverableResult{changed: true}, nil
		}
		return nil, fmt.Errorf("archive: undeliverable: no message %d from %s in %s: %w", c.ID, c.From, conv, wire.ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	var body []byte
	var ok bool
	if err := it.Value(func(v []byte) error {
		_, body, ok, _ = readBody(conv, c.ID, v, true)
		return nil
	}); err != nil {
		return nil, err
	}
	if !ok || string(senderOf(body)) != c.From || !bytes.HasSuffix(body, []byte("}")) {
		// The peer's message in the same conversation, or an old layout.
		return nil, fmt.Errorf("archive: undeliverable: message %d is not %s's in %s: %w", c.ID, c.From, conv, wire.ErrNotFound)
	}
	if bytes.Contains(body, []byte(`"status":"`+StatusUndeliverable+`"`)) {
		return undeliverableResult{}, nil // a notice sent again (marked before the mark was kept)
	}
	nb := append(body[:len(body)-1:len(body)-1], `,"status":"`+StatusUndeliverable+`","reason":"`+c.Reason+`"}`...)
	kb := newKeyBuf(len(nb) + 64)
	if err := tx.Set(ck, compactBody(&kb, nb, c.ID, c.From, c.To, c.Group)); err != nil {
		return nil, err
	}
	// The mark outlives the hot copy: once the message is sealed, a notice
	// sent again still finds it.
	if err := tx.Set(mk, nil); err != nil {
		return nil, err
	}
	return undeliverableResult{changed: true}, nil
}

// undeliverableKey marks message id of conversation conv (direct, or a
// group's mirror) as undeliverable (its sender was told):
// ud/{convKey}/{id}, empty. It stays when the message is sealed, and
// goes with it (retention, the erasure of a direct conversation).
func undeliverableKey(conv string, id snowflake.ID) []byte {
	return cat([]byte("ud/"+conv+"/"), be64(uint64(id)))
}

func undeliverablePrefix(conv string) []byte { return cat([]byte("ud/" + conv + "/")) }

// deleteUndeliverableBelow deletes the undeliverable marks of conv below
// cutoff, at most retentionBatch of them (more: some are left).
func deleteUndeliverableBelow(tx *badger.Txn, conv string, cutoff snowflake.ID) (more bool, err error) {
	prefix := undeliverablePrefix(conv)
	var keys [][]byte
	it := tx.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: false})
	for it.Seek(prefix); it.ValidForPrefix(prefix); it.Next() {
		if snowflake.ID(tail8(it.Item().Key())) >= cutoff {
			break
		}
		if len(keys) == retentionBatch {
			more = true
			break
		}
		keys = append(keys, it.Item().KeyCopy(nil))
	}
	it.Close()
	for _, k := range keys {
		if err := tx.Delete(k); err != nil {
			return false, err
		}
	}
	return more, nil
}
