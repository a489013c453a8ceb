package region

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/dgraph-io/badger/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgechat/edgechat/internal/address"
	"github.com/edgechat/edgechat/internal/wire"
)

// Groups across regions (issue 14, point 4). A group lives in the region
// where it was created (its home); members of other regions are listed
// there as name@region. Every region with members keeps a mirror of the
// group under gid@home (the users service's CmdGroupMirror), in which the
// home's users are name@home and its own users plain names; its clients
// use group/{gid}@{home}/... like any group topic.
//
// Through the same outboxes as direct messages, in commit order:
//
//   - the home stages the group's whole state (metadata and members) for
//     every region that has members now or had them at the last change
//     (so a region whose last member left drops its mirror), on every
//     committed change: $link/{home}/group (in chunks for a large
//     group, groupchunks.go). A region cut off keeps its
//     last mirror and gets the latest state when the link is back.
//   - a message of a home member is staged once per region that has
//     members, whatever their number: $link/{home}/gmsg.
//   - a message a remote member sends is committed in their region first
//     (stored in the mirror, fanned out to that region's members), then
//     staged for the home only. The home checks the sender's membership,
//     commits it under the origin's ID (the dedupe key), fans it out and
//     stages it for every other region with members (not back to the
//     origin region): a message crosses each link once.
//
// On the link the group is always qualified with its home (gid@home) and
// the sender with their region.

// Kinds of outbox entries: a stored envelope starts with '{'; a group's
// state with stateMark.
const stateMark = 'S'

// GroupMsgTopic is the topic a link publishes group messages on.
func GroupMsgTopic(fromRegion string) string { return LinkPrefix + fromRegion + "/gmsg" }

// GroupStateTopic is the topic a link publishes groups' states on.
func GroupStateTopic(fromRegion string) string { return LinkPrefix + fromRegion + "/group" }

// prefixGroupRegions keys, per group of this region, the regions its
// state was last staged for (comma-separated, sorted): replicated, written
// in the FSM's transaction of the change.
const prefixGroupRegions = "r/rgn/gs/"

// Mirrors commits the state of another region's group (the users
// service's ApplyMirror): state is the JSON of users.RemoteGroup, the
// group's ID qualified and members as this region names them.
type Mirrors interface {
	ApplyMirror(ctx context.Context, state []byte) error
}

// GroupStore commits a group message that arrived over a link (the
// archive's StoreRemoteGroup).
type GroupStore interface {
	StoreRemoteGroup(ctx context.Context, env wire.Envelope) (stored wire.Envelope, payload []byte, dup bool, err error)
}

type groupMetrics struct {
	sent *prometheus.CounterVec // link, kind
}

func newGroupMetrics(reg prometheus.Registerer) (*groupMetrics, error) {
	m := &groupMetrics{sent: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edgechat_region_link_group_sent_total",
		Help: "Group messages and group states this region's links handed to other regions (acknowledged), by link and kind (message, state, leave)."},
		[]string{"link", "kind"})}
	if reg != nil {
		if err := reg.Register(m.sent); err != nil {
			return nil, fmt.Errorf("region: metrics: %w", err)
		}
	}
	return m, nil
}

// StageGroupState is the users service's group hook: inside the FSM
// transaction of a change of group gid (of this region), it stages the
// group's state for the regions it has members in now (regions) and for
// those it had them in at the last change. state is users.RemoteGroup's
// JSON; the function returned wakes the links after the commit.
func (b *Bridge) StageGroupState(tx *badger.Txn, gid string, regions []string, state []byte) (func(), error) {
	key := []byte(prefixGroupRegions + gid)
	last, err := groupRegions(tx, gid)
	if err != nil {
		return nil, err
	}
	targets := slices.Clone(regions)
	for _, r := range last {
		if !slices.Contains(targets, r) {
			targets = append(targets, r)
		}
	}
	slices.Sort(targets)
	if len(regions) == 0 {
		err = tx.Delete(key)
	} else {
		err = tx.Set(key, []byte(strings.Join(regions, ",")))
	}
	if err != nil {
		return nil, err
	}
	entries, err := stateChunks(state) // groupchunks.go
	if err != nil {
		return nil, err
	}
	for _, r := range targets {
		for _, entry := range entries {
			if err := stageRegion(tx, r, entry); err != nil {
				return nil, err
			}
		}
	}
	return b.wake(targets), nil
}

// groupRegions reads the regions group gid (of this region) has members
// in, as its last change staged them: one read, not a scan of the
// members, on every group message.
func groupRegions(tx *badger.Txn, gid string) ([]string, error) {
	it, err := tx.Get([]byte(prefixGroupRegions + gid))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	err = it.Value(func(v []byte) error {
		if len(v) > 0 {
			out = strings.Split(string(v), ",")
		}
		return nil
	})
	return out, err
}

// StageGroupMessage is the archive's outbox hook for a stored group
// message: a message of a mirror (gid@home) sent by a user of this region
// goes to the home; a message of a group of this region goes once to
// every region with members but the sender's. Anything else stays here.
func (b *Bridge) StageGroupMessage(tx *badger.Txn, gid, from string, payload []byte) (func(), error) {
	var targets []string
	if home := address.RegionOf(gid); home != "" {
		if strings.IndexByte(from, '@') >= 0 {
			return nil, nil // relayed to us by the home: not sent back
		}
		targets = []string{home}
	} else {
		regions, err := groupRegions(tx, gid)
		if err != nil {
			return nil, err
		}
		origin := address.RegionOf(from)
		for _, r := range regions {
			if r != origin {
				targets = append(targets, r)
			}
		}
	}
	for _, r := range targets {
		if err := stageRegion(tx, r, payload); err != nil {
			return nil, err
		}
	}
	return b.wake(targets), nil
}

func (b *Bridge) wake(regions []string) func() {
	if len(regions) == 0 {
		return nil
	}
	return func() {
		for _, r := range regions {
			b.notify(r)
		}
	}
}

// linkPayload turns the outbox entry at pos into what the link
// publishes: the topic, the payload and the kind (dm, message, state).
// A group's state and a leave carry "seq", pos+1: they have no ID, and
// the other region skips a resent one by it (users linkseq.go).
func linkPayload(entry []byte, own string, pos uint64) (topic string, payload []byte, kind string, err error) {
	if len(entry) > 0 && entry[0] == stateMark {
		p, err := withSeq(entry[1:], pos+1)
		return GroupStateTopic(own), p, "state", err
	}
	if topic, payload, kind, ok := noticePayload(entry, own); ok { // notices.go
		return topic, payload, kind, nil
	}
	if len(entry) > 0 && entry[0] == eraseMark {
		p, err := erasePayload(entry[1:], own) // erasure.go
		return BatchTopic(own), p, frameErase, err
	}
	if len(entry) > 0 && entry[0] == leaveMark {
		p, err := leavePayload(entry[1:], own, pos+1) // groupleave.go
		return GroupLeaveTopic(own), p, "leave", err
	}
	var env wire.Envelope
	if err := json.Unmarshal(entry, &env); err != nil {
		return "", nil, "", err
	}
	if env.Group == "" {
		p, err := forwardPayload(entry, own)
		return DMTopic(own), p, "dm", err
	}
	if env.ID == 0 || env.From == "" || wire.ValidGroupID(env.Group) != nil {
		return "", nil, "", errors.New("not a stored group message")
	}
	if address.RegionOf(env.From) == "" { // a member of a third region's message, relayed by the home, is qualified already
		env.From = address.Qualify(env.From, own)
	}
	if address.RegionOf(env.Group) == "" {
		env.Group += "@" + own
	}
	env.Mentions = qualifyMentions(env.Mentions, own) // mentions.go
	return GroupMsgTopic(own), env.Marshal(), "message", nil
}

// receiveGroup handles the group topics of region's link.
func (b *Bridge) receiveGroup(ctx context.Context, region, topic string, payload []byte) error {
	switch topic {
	case GroupStateTopic(region):
		return b.receiveState(ctx, region, payload)
	case GroupMsgTopic(region):
		return b.receiveGroupMessage(ctx, region, payload)
	case GroupLeaveTopic(region):
		return b.receiveLeave(ctx, region, payload) // groupleave.go
	}
	b.count(region, "invalid")
	return fmt.Errorf("region: link %s: topic %q: %w", region, topic, wire.ErrInvalid)
}

// linkState is a group's state on the link (users.RemoteGroup), the
// metadata kept as it came but for the fields renamed here.
type linkState struct {
	Group   map[string]json.RawMessage `json:"group"`
	Members []struct {
		ID   string `json:"id"`
		Role string `json:"role"`
	} `json:"members"`
	By    string `json:"by,omitempty"` // who made the change
	Part  int    `json:"part,omitempty"`
	Parts int    `json:"parts,omitempty"` // a state in chunks (groupchunks.go)
	Seq   uint64 `json:"seq,omitempty"`   // its place in the home's outbox, from 1 (linkPayload); 0: not told
	// Leaves: region → seq of the last leave of that region's members the
	// home applied (users RemoteGroup.Leaves), passed on as it is; absent
	// from a home of an earlier version.
	Leaves json.RawMessage `json:"leaves,omitempty"`
}

// withSeq puts "seq":seq first in a group state's JSON object (stored as
// the home encoded it, without a seq), without decoding its members.
func withSeq(state []byte, seq uint64) ([]byte, error) {
	if len(state) < 2 || state[0] != '{' {
		return nil, errors.New("not a group state")
	}
	out := make([]byte, 0, len(state)+32)
	out = append(out, `{"seq":`...)
	out = strconv.AppendUint(out, seq, 10)
	if rest := bytes.TrimLeft(state[1:], " \t\r\n"); len(rest) > 0 && rest[0] != '}' {
		out = append(out, ',')
	}
	return append(out, state[1:]...), nil
}

// receiveState commits the home's view of one of its groups as this
// region's mirror.
func (b *Bridge) receiveState(ctx context.Context, region string, payload []byte) error {
	if b.deps.Mirrors == nil {
		b.count(region, "invalid")
		return fmt.Errorf("region: link %s: groups across regions not configured here: %w", region, wire.ErrInvalid)
	}
	out, err := mirrorState(b.cfg.Region, region, payload)
	if err != nil {
		b.count(region, "invalid")
		return err
	}
	if err := b.deps.Mirrors.ApplyMirror(ctx, out); err != nil {
		b.count(region, resultOf(err))
		return err
	}
	b.count(region, "group_state")
	return nil
}

// mirrorState turns a group state that region (the group's home) sent
// into this region's (local's) mirror: gid@home, the home's users
// name@home, ours plain names, a third region's kept.
func mirrorState(local, region string, payload []byte) ([]byte, error) {
	var st linkState
	var gid string
	err := json.Unmarshal(payload, &st)
	if err == nil {
		err = json.Unmarshal(st.Group["groupId"], &gid)
	}
	if err != nil || gid == "" || strings.IndexByte(gid, '@') >= 0 || wire.ValidGroupID(gid) != nil {
		return nil, fmt.Errorf("region: link %s: not a group state: %v: %w", region, err, wire.ErrInvalid)
	}
	if st.Parts < 0 || st.Parts > MaxStateParts || st.Part < 0 || st.Part >= max(st.Parts, 1) {
		return nil, fmt.Errorf("region: link %s: group %s: part %d of %d: %w", region, gid, st.Part, st.Parts, wire.ErrInvalid)
	}
	name := func(id string) (string, error) {
		if wire.ValidPeerID(id) != nil {
			return "", wire.ErrInvalidName
		}
		a, _ := address.Parse(id)
		switch a.Region {
		case "":
			return id + "@" + region, nil
		case local:
			return a.Name, nil
		}
		return id, nil
	}
	for i := range st.Members {
		id, err := name(st.Members[i].ID)
		if err != nil {
			return nil, fmt.Errorf("region: link %s: group %s: member %q: %w", region, gid, st.Members[i].ID, wire.ErrInvalid)
		}
		st.Members[i].ID = id
	}
	var owner string
	if json.Unmarshal(st.Group["owner"], &owner) == nil && owner != "" {
		if owner, err = name(owner); err == nil {
			st.Group["owner"], _ = json.Marshal(owner)
		}
	}
	if st.By != "" {
		if st.By, err = name(st.By); err != nil {
			st.By = ""
		}
	}
	st.Group["groupId"], _ = json.Marshal(gid + "@" + region)
	return json.Marshal(st)
}

// groupMessage reads a group message that region's link brought to this
// region (local): a message to a group of ours from a user of region, or
// to a group of region (the home relaying) from anyone but our own users.
// It returns the envelope as this region stores it (the group as named
// here); forged tells a refused sender or group (wire.ErrForbidden) from
// a malformed message (wire.ErrInvalid).
func groupMessage(local, region string, payload []byte) (env wire.Envelope, forged bool, err error) {
	env, err = wire.ParseEnvelopeWithin(payload, maxLinkEnvelope)
	var head remoteHead
	if err == nil {
		err = json.Unmarshal(payload, &head)
	}
	if err == nil {
		err = withMedia(&env, payload) // media.go
	}
	home := address.RegionOf(head.Group)
	if err != nil || head.ID == 0 || head.To != "" || home == "" || wire.ValidGroupID(head.Group) != nil {
		return wire.Envelope{}, false, fmt.Errorf("region: link %s: not a group message with an id and a qualified group: %v: %w", region, err, wire.ErrInvalid)
	}
	from, ferr := address.Parse(head.From)
	gid := head.Group
	switch {
	case ferr != nil || from.Region == "" || wire.ValidUserID(from.Name) != nil:
		err = fmt.Errorf("sender %q is not qualified", head.From)
	case home == local && from.Region != region:
		err = fmt.Errorf("sender %q of a group of ours is not a user of %s", head.From, region)
	case home == local:
		gid = strings.TrimSuffix(gid, "@"+home)
	case home != region:
		err = fmt.Errorf("group %s does not live in %s", head.Group, region)
	case from.Region == local:
		err = fmt.Errorf("sender %q is one of ours", head.From)
	}
	if err != nil {
		return wire.Envelope{}, true, fmt.Errorf("region: link %s: id %s: %v: %w", region, head.ID, err, wire.ErrForbidden)
	}
	env.ID, env.From, env.Group, env.To = head.ID, head.From, gid, ""
	env.Mentions = localMentions(env.Mentions, local, region) // mentions.go
	return env, false, nil
}

// receiveGroupMessage stores and fans out a group message from region's
// link: to a group of ours, from a user of that region (a member); or to
// a group of that region (it is the home relaying), from anyone but our
// own users.
func (b *Bridge) receiveGroupMessage(ctx context.Context, region string, payload []byte) error {
	if b.deps.GroupStore == nil {
		b.count(region, "invalid")
		return fmt.Errorf("region: link %s: groups across regions not configured here: %w", region, wire.ErrInvalid)
	}
	env, forged, err := groupMessage(b.cfg.Region, region, payload)
	if forged {
		b.count(region, "forged")
		b.log.Warn("region link: group message refused", "link", region, "reason", err)
		return b.bounceGroup(ctx, region, payload, err) // notices.go
	}
	if err != nil {
		b.count(region, "invalid")
		return b.bounceGroup(ctx, region, payload, err)
	}
	stored, out, dup, err := b.deps.GroupStore.StoreRemoteGroup(ctx, env)
	return b.bounceGroup(ctx, region, payload, b.delivered(region, wire.GroupTopic(env.Group), stored, out, dup, err))
}
