package region

// Notices (issue 14): besides messages and groups' states, two kinds of
// outbox entries cross links, in commit order with the messages, through
// the same outboxes, cursors and batches:
//
//   - a relation ("rel" frames): a user of this region put a user of
//     another region in their contacts or blocks, or took them out
//     (the users service's RelationHook calls StageRelation in the FSM
//     transaction of the change). The other region commits it as a
//     relation of a user of another region (users.ApplyRemoteRelation):
//     the visibility of presence is decided in the viewer's region, so
//     alice@eu's block of bob@us must be known in us for bob not to see
//     her presence, and alice@eu's contact bob@us lets bob see it. A
//     relation that region refuses (no such user there, a forged owner)
//     is skipped there, counted and logged; no notice goes back.
//   - an undeliverable notice ("undeliverable" frames): this region
//     refused a direct message of the link for good (no such user,
//     blocked, forged or misrouted, malformed but with an id). Before the
//     refusal is acknowledged the notice is committed here
//     (CmdRegionNotice), staged in the outbox of the link the message
//     came by (never of the region the message claims: a forged frame's
//     notice goes back to the link that sent it); the origin commits it
//     (archive.MarkUndeliverable): the stored message's status and an
//     event to the sender. A notice is never answered by a notice: one
//     the origin refuses (not its user's message to this region) is
//     skipped, counted and logged. A message to a group of this region
//     from a member of the link's region that this region refuses for
//     good (most often: the member was removed while the link was down,
//     and the mirror there still listed them) is answered the same way
//     (bounceGroup), naming the group instead of a recipient; a group
//     message the home relays is not (its sender is not the link's).
//
// On the wire (the frame's "p"):
//
//	rel:           {"kind":"block"|"contact","owner":"alice@eu","uid":"bob@us","add":true,"at":"<RFC 3339>"}
//	undeliverable: {"id":"<origin id>","from":"alice@eu","to":"bob@us","reason":"no_such_user"|"forbidden"|"invalid"}
//	               or, for a message to a group of the refusing region (its home),
//	               {"id":"<origin id>","from":"alice@eu","group":"k3x9@us","reason":...}
//
// In the outbox a relation is relMark followed by its frame's payload
// with the owner unqualified (the link qualifies it when it sends), a
// notice noticeMark followed by its frame's payload.

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/internal/address"
	"github.com/edgechat/edgechat/internal/snowflake"
	"github.com/edgechat/edgechat/internal/wire"
)

// Outbox marks and frame kinds of notices.
const (
	relMark    = 'R'
	noticeMark = 'U'

	frameRel           = "rel"
	frameUndeliverable = "undeliverable"
)

// Undeliverable reasons (the archive's).
const (
	reasonNoSuchUser = "no_such_user"
	reasonForbidden  = "forbidden"
	reasonInvalid    = "invalid"
)

// Relations commits a contact or block of a user of another region
// (owner, name@region) about a user of this one (the users service's
// ApplyRemoteRelation).
type Relations interface {
	ApplyRemoteRelation(ctx context.Context, kind, owner, uid string, add bool, at time.Time) error
}

// Undeliverables commits another region's notice that it refused a
// message of ours for good (the archive's MarkUndeliverable): from is the
// sender, a user of this region, to the recipient name@region.
type Undeliverables interface {
	MarkUndeliverable(ctx context.Context, id snowflake.ID, from, to, reason string) error
	// MarkGroupUndeliverable is the same for a message of from to group
	// (gid@home, a group of another region) that its home refused.
	MarkGroupUndeliverable(ctx context.Context, id snowflake.ID, from, group, reason string) error
}

// relationFrame is a rel frame's payload.
type relationFrame struct {
	Kind  string    `json:"kind"`
	Owner string    `json:"owner"`
	UID   string    `json:"uid"`
	Add   bool      `json:"add"`
	At    time.Time `json:"at"`
}

// noticeFrame is an undeliverable frame's payload: of a direct message
// (To) or of a message to a group of the notice's region (Group).
type noticeFrame struct {
	ID     snowflake.ID `json:"id"`
	From   string       `json:"from"`
	To     string       `json:"to,omitempty"`
	Group  string       `json:"group,omitempty"`
	Reason string       `json:"reason"`
}

type noticeMetrics struct {
	n *prometheus.CounterVec // link, kind, result
}

func newNoticeMetrics(reg prometheus.Registerer) (*noticeMetrics, error) {
	m := &noticeMetrics{n: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edgechat_region_link_notices_total",
		Help: "Contacts and blocks (kind relation) and undeliverable notices (kind undeliverable) across links, by link, kind and result " +
			"(staged: committed here for the link; applied: what the link brought, committed; refused: what the link brought, refused for good)."},
		[]string{"link", "kind", "result"})}
	if reg != nil {
		if err := reg.Register(m.n); err != nil {
			return nil, fmt.Errorf("region: metrics: %w", err)
		}
	}
	return m, nil
}

func (b *Bridge) countNotice(link, kind, result string) {
	b.nm.n.WithLabelValues(link, kind, result).Inc()
}

// StageRelation is the users service's RelationHook: a contact or block
// change of owner (a user of this region) about uid (name@region) goes
// into region's outbox in the same transaction; the function returned
// wakes the link once it committed. Like stage, it decides from its
// arguments alone (every node runs it): the owner is qualified when the
// link sends it (noticePayload).
func (b *Bridge) StageRelation(tx *badger.Txn, kind, owner, uid string, add bool, at time.Time) (func(), error) {
	a, err := address.Parse(uid)
	if err != nil || a.Region == "" || address.ValidRegion(a.Region) != nil {
		return nil, fmt.Errorf("region: stage relation: uid %q", uid)
	}
	p, err := json.Marshal(relationFrame{Kind: kind, Owner: owner, UID: uid, Add: add, At: at})
	if err != nil {
		return nil, err
	}
	if err := stageRegion(tx, a.Region, append([]byte{relMark}, p...)); err != nil {
		return nil, err
	}
	return func() { b.notify(a.Region) }, nil
}

// noticePayload reads an outbox entry that is a notice: what the link
// sends, a relation's owner qualified with this region (own).
func noticePayload(entry []byte, own string) (topic string, payload []byte, kind string, ok bool) {
	if len(entry) == 0 {
		return "", nil, "", false
	}
	switch entry[0] {
	case relMark:
		var r relationFrame
		if json.Unmarshal(entry[1:], &r) != nil {
			return BatchTopic(own), nil, frameRel, true // not valid JSON: skipped as unreadable
		}
		r.Owner = address.Qualify(r.Owner, own)
		return BatchTopic(own), mustJSON(r), frameRel, true
	case noticeMark:
		return BatchTopic(own), entry[1:], frameUndeliverable, true
	}
	return "", nil, "", false
}

// noticeCmd is CmdRegionNotice's payload: uvarint-length region, then
// the outbox entry (noticeMark and the frame's payload).
type noticeCmd struct {
	Region string
	Entry  []byte
}

func (c noticeCmd) encode() []byte {
	p := binary.AppendUvarint(nil, uint64(len(c.Region)))
	p = append(p, c.Region...)
	return append(p, c.Entry...)
}

func decodeNoticeCmd(p []byte) (noticeCmd, error) {
	n, k := binary.Uvarint(p)
	if k <= 0 || n > uint64(len(p)-k) {
		return noticeCmd{}, errors.New("region: malformed notice command")
	}
	c := noticeCmd{Region: string(p[k : k+int(n)]), Entry: p[k+int(n):]}
	if address.ValidRegion(c.Region) != nil || len(c.Entry) < 2 || c.Entry[0] != noticeMark {
		return noticeCmd{}, fmt.Errorf("region: notice command for region %q", c.Region)
	}
	return c, nil
}

// applyNotice stages a notice in a region's outbox (CmdRegionNotice).
func (b *Bridge) applyNotice(tx *badger.Txn, _ fsm.Position, payload []byte) (any, error) {
	c, err := decodeNoticeCmd(payload)
	if err != nil {
		return nil, err
	}
	if err := stageRegion(tx, c.Region, c.Entry); err != nil {
		return nil, err
	}
	return afterCommit(func() { b.notify(c.Region) }), nil
}

// afterCommit runs a function once the entry committed (fsm.AfterCommitter).
type afterCommit func()

func (f afterCommit) AfterCommit() { f() }

// reasonOf is the undeliverable reason of a refusal for good.
func reasonOf(err error) string {
	switch {
	case errors.Is(err, wire.ErrNotFound):
		return reasonNoSuchUser
	case errors.Is(err, wire.ErrForbidden):
		return reasonForbidden
	}
	return reasonInvalid
}

// bounce answers a direct message of region's link refused for good
// (final err) with an undeliverable notice for that link, committed
// before the refusal is acknowledged; it returns err, or the failure to
// commit the notice (then the link sends the message again, is refused
// again, and the origin takes the second notice as the first). A
// message without an id cannot be named and is not answered.
func (b *Bridge) bounce(ctx context.Context, region string, payload []byte, err error) error {
	if err == nil || !final(err) {
		return err
	}
	var head struct {
		ID   snowflake.ID `json:"id"`
		From string       `json:"from"`
		To   string       `json:"to"`
	}
	if json.Unmarshal(payload, &head) != nil || head.ID == 0 || len(head.From) > 128 || len(head.To) > 128 {
		return err
	}
	n := noticeFrame{ID: head.ID, From: head.From, To: head.To, Reason: reasonOf(err)}
	if serr := b.stageNotice(ctx, region, n); serr != nil {
		return serr
	}
	b.log.Info("region link: message refused for good; the origin is told", "link", region, "id", head.ID, "from", head.From, "to", head.To, "reason", n.Reason)
	return err
}

// stageNotice commits the undeliverable notice n for region's link; an
// error (wrapping wire.ErrUnavailable) when it could not: the message is
// then refused as not committed, and sent again.
func (b *Bridge) stageNotice(ctx context.Context, region string, n noticeFrame) error {
	entry := append([]byte{noticeMark}, mustJSON(n)...)
	if _, err := b.deps.Proposer.Propose(ctx, wire.CmdRegionNotice, noticeCmd{Region: region, Entry: entry}.encode()); err != nil {
		b.log.Warn("region link: undeliverable notice not committed; the message is refused as not committed", "link", region, "id", n.ID, "err", err)
		return fmt.Errorf("region: link %s: undeliverable notice for %d: %v: %w", region, n.ID, err, wire.ErrUnavailable)
	}
	b.countNotice(region, frameUndeliverable, "staged")
	return nil
}

// bounceGroup is bounce for a message of region's link to a group of
// this region, refused for good (receiveGroupMessage): the notice names
// the group as the frame did and the sender's region does
// (gid@{this region}). A frame that is not from a user of region to a
// group of ours (a message the home relays, a forged sender) is not
// answered.
func (b *Bridge) bounceGroup(ctx context.Context, region string, payload []byte, err error) error {
	if err == nil || !final(err) {
		return err
	}
	var head struct {
		ID    snowflake.ID `json:"id"`
		From  string       `json:"from"`
		Group string       `json:"group"`
	}
	if json.Unmarshal(payload, &head) != nil || head.ID == 0 || len(head.From) > 128 || len(head.Group) > 128 ||
		address.RegionOf(head.Group) != b.cfg.Region || address.RegionOf(head.From) != region {
		return err // not a message of a member of region to a group of ours: nobody to tell there
	}
	n := noticeFrame{ID: head.ID, From: head.From, Group: head.Group, Reason: reasonOf(err)}
	if serr := b.stageNotice(ctx, region, n); serr != nil {
		return serr
	}
	b.log.Info("region link: group message refused for good; the origin is told", "link", region, "id", head.ID, "from", head.From, "group", head.Group, "reason", n.Reason)
	return err
}

// parseRelation reads a rel frame of region's link: the owner a user of
// region, uid a user of own (returned unqualified).
func parseRelation(p []byte, region, own string) (relationFrame, string, error) {
	var r relationFrame
	if err := json.Unmarshal(p, &r); err != nil {
		return r, "", fmt.Errorf("region: relation: %v: %w", err, wire.ErrInvalid)
	}
	if r.Kind != "contact" && r.Kind != "block" {
		return r, "", fmt.Errorf("region: relation kind %q: %w", r.Kind, wire.ErrInvalid)
	}
	o, err := address.Parse(r.Owner)
	if err != nil || o.Region != region || wire.ValidUserID(o.Name) != nil {
		return r, "", fmt.Errorf("region: relation owner %q is not a user of %s: %w", r.Owner, region, wire.ErrForbidden)
	}
	u, err := address.Parse(r.UID)
	if err != nil || u.Region != own || wire.ValidUserID(u.Name) != nil {
		return r, "", fmt.Errorf("region: relation uid %q is not a user of %s: %w", r.UID, own, wire.ErrForbidden)
	}
	return r, u.Name, nil
}

// parseNotice reads an undeliverable frame of region's link: the sender
// a user of own (returned unqualified), the recipient one of region.
func parseNotice(p []byte, region, own string) (noticeFrame, string, error) {
	var n noticeFrame
	if err := json.Unmarshal(p, &n); err != nil {
		return n, "", fmt.Errorf("region: undeliverable notice: %v: %w", err, wire.ErrInvalid)
	}
	if n.ID == 0 || n.Reason != reasonNoSuchUser && n.Reason != reasonForbidden && n.Reason != reasonInvalid {
		return n, "", fmt.Errorf("region: undeliverable notice: id %d reason %q: %w", n.ID, n.Reason, wire.ErrInvalid)
	}
	f, err := address.Parse(n.From)
	if err != nil || f.Region != own || wire.ValidUserID(f.Name) != nil {
		return n, "", fmt.Errorf("region: undeliverable notice: sender %q is not of %s: %w", n.From, own, wire.ErrForbidden)
	}
	if n.Group != "" {
		if n.To != "" || address.RegionOf(n.Group) != region || wire.ValidGroupID(n.Group) != nil {
			return n, "", fmt.Errorf("region: undeliverable notice: group %q is not of %s: %w", n.Group, region, wire.ErrForbidden)
		}
		return n, f.Name, nil
	}
	t, err := address.Parse(n.To)
	if err != nil || t.Region != region || wire.ValidUserID(t.Name) != nil {
		return n, "", fmt.Errorf("region: undeliverable notice: recipient %q is not of %s: %w", n.To, region, wire.ErrForbidden)
	}
	n.To = t.String()
	return n, f.Name, nil
}

// receiveNotice handles a rel or undeliverable frame of region's link.
// A refusal for good is counted, logged and returned (the batch skips
// it); anything else fails the batch (sent again).
func (b *Bridge) receiveNotice(ctx context.Context, region, kind string, p []byte) error {
	var err error
	label := "relation"
	switch kind {
	case frameRel:
		var r relationFrame
		var uid string
		if r, uid, err = parseRelation(p, region, b.cfg.Region); err == nil {
			if b.deps.Relations == nil {
				err = fmt.Errorf("region: relations across regions not served here: %w", wire.ErrInvalid)
			} else {
				err = b.deps.Relations.ApplyRemoteRelation(ctx, r.Kind, r.Owner, uid, r.Add, r.At)
			}
		}
	case frameUndeliverable:
		label = frameUndeliverable
		var n noticeFrame
		var from string
		if n, from, err = parseNotice(p, region, b.cfg.Region); err == nil {
			if b.deps.Undeliverables == nil {
				err = fmt.Errorf("region: undeliverable notices not served here: %w", wire.ErrInvalid)
			} else if n.Group != "" {
				err = b.deps.Undeliverables.MarkGroupUndeliverable(ctx, n.ID, from, n.Group, n.Reason)
			} else {
				err = b.deps.Undeliverables.MarkUndeliverable(ctx, n.ID, from, n.To, n.Reason)
			}
		}
	default:
		err = fmt.Errorf("region: frame kind %q: %w", kind, wire.ErrInvalid)
	}
	switch {
	case err == nil:
		b.countNotice(region, label, "applied")
	case final(err):
		b.countNotice(region, label, "refused")
		b.log.Warn("region link: notice refused; skipped", "link", region, "kind", kind, "err", err)
	}
	return err
}
