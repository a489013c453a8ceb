package region

// Group typing across regions (issue 14): ephemeral like direct typing
// (ephemeral.go), crossing a link only while it is up and only towards
// regions with members of the group.
//
// A user of this region types on a group topic (group/{gid}/typing of a
// group of ours, or group/{gid}@{home}/typing of a mirror): the broker
// tells GroupTyping, which publishes the notification, as this region
// names group and sender, on group/{gid}/typing/{region} for
//
//   - every region the group (ours) has members in (groupRegions), or
//   - the home only, for a mirror: the home relays.
//
// Each region's link connection into this broker subscribes to
// group/+/typing/{its region} (no user may read it: four levels under
// group/ are no chat topic), at QoS 0 like the rest of the ephemeral
// traffic. A region that receives typing of one of its own groups from a
// member's region republishes it to its members (group/{gid}/typing,
// sender name@region) and relays it on to the other regions with members,
// never back to the region it came from; typing of a group of the link's
// region is republished on the mirror's topic group/{gid}@{home}/typing.
// The relay goes through the home (one crossing to the home, one from the
// home to each other region) rather than from the typist's region to
// every region directly: only the home knows which regions have members
// now, and a mirror knows only its own.
//
// The published notifications are inline (the broker's hook sees only
// what clients publish), so nothing received is sent back.

import (
	"encoding/json"
	"slices"
	"strings"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/internal/address"
	"github.com/edgechat/edgechat/internal/wire"
)

const kindGroupTyping = "group_typing"

// maxGroupTypingBytes bounds a group typing notification on a link.
const maxGroupTypingBytes = 512

// GroupTypingTopic is the topic on which a region hands group typing to
// region's link: gid as the publishing region names the group.
func GroupTypingTopic(gid, region string) string { return "group/" + gid + "/typing/" + region }

// GroupTypingFilter is what region's link subscribes to in the other
// region's broker.
func GroupTypingFilter(region string) string { return "group/+/typing/" + region }

// GroupTyping is the broker's hook (broker.GroupTypist): from, a user of
// this region, typed in group gid (ours, or a mirror gid@home).
func (b *Bridge) GroupTyping(gid, from, state string) {
	if wire.ValidGroupID(gid) != nil || wire.ValidUserID(from) != nil {
		return
	}
	var targets []string
	if home := address.RegionOf(gid); home != "" {
		targets = []string{home}
	} else {
		regions, err := b.readGroupRegions(gid)
		if err != nil {
			b.log.Debug("region: group typing: regions of the group", "gid", gid, "err", err)
			return
		}
		targets = regions
	}
	b.relayTyping(gid, wire.Typing{State: state, From: from}, targets, "")
}

// relayTyping publishes t for the links of targets but skip.
func (b *Bridge) relayTyping(gid string, t wire.Typing, targets []string, skip string) {
	payload := mustJSON(t)
	for _, r := range targets {
		if r == skip || !b.Linked(r) {
			continue
		}
		if err := b.deps.Publisher.Publish(wire.Outbound{Topic: GroupTypingTopic(gid, r), Payload: payload}); err != nil {
			b.log.Debug("region: group typing not handed to the link", "link", r, "gid", gid, "err", err)
		}
	}
}

func (b *Bridge) readGroupRegions(gid string) (regions []string, err error) {
	err = b.deps.DB.View(func(tx *badger.Txn) error {
		regions, err = groupRegions(tx, gid)
		return err
	})
	return regions, err
}

// groupTypingOf reads group/{gid}/typing/{own} as the link of link
// delivered it; ok is false for any other topic.
func groupTypingOf(topic, own string) (gid string, ok bool) {
	rest, ok := strings.CutPrefix(topic, "group/")
	if !ok {
		return "", false
	}
	gid, tail, ok := strings.Cut(rest, "/")
	return gid, ok && tail == "typing/"+own
}

// translateGroupTyping turns group typing that link's region handed us
// into what this region (own) publishes, and, for a group of ours, the
// group's ID here and the regions to relay it to; regions says which
// regions a group of ours has members in.
func translateGroupTyping(own, link, gid string, payload []byte, regions func(gid string) ([]string, error)) (out wire.Outbound, local string, relay []string, err error) {
	var v wire.Typing
	if len(payload) > maxGroupTypingBytes || json.Unmarshal(payload, &v) != nil || v.State != "typing" && v.State != "stopped" {
		return wire.Outbound{}, "", nil, wire.ErrInvalid
	}
	from, ferr := address.Parse(v.From)
	if wire.ValidGroupID(gid) != nil || ferr != nil || wire.ValidUserID(from.Name) != nil || address.ValidRegion(link) != nil {
		return wire.Outbound{}, "", nil, wire.ErrInvalid
	}
	var topic, sender string
	switch address.RegionOf(gid) {
	case "": // a group of link's region: our mirror
		if from.Region == own {
			return wire.Outbound{}, "", nil, wire.ErrInvalid // our own user, sent back
		}
		topic, sender = "group/"+gid+"@"+link+"/typing", v.From
		if from.Region == "" {
			sender = address.Qualify(v.From, link)
		}
	case own: // a group of ours: a member of link's region typed
		if from.Region != "" {
			return wire.Outbound{}, "", nil, wire.ErrInvalid // only the home relays
		}
		gid = strings.TrimSuffix(gid, "@"+own)
		rs, err := regions(gid)
		if err != nil {
			return wire.Outbound{}, "", nil, err
		}
		if !slices.Contains(rs, link) {
			return wire.Outbound{}, "", nil, wire.ErrForbidden // no member there
		}
		topic, sender, local, relay = "group/"+gid+"/typing", v.From+"@"+link, gid, rs
	default:
		return wire.Outbound{}, "", nil, wire.ErrInvalid
	}
	if a, _ := address.Parse(sender); a.Region == own {
		sender = a.Name
	}
	t := wire.Typing{State: v.State, From: sender}
	return wire.Outbound{Topic: topic, Payload: mustJSON(t), UserProps: []wire.Prop{{Key: "from", Value: sender}}}, local, relay, nil
}

// receiveGroupTyping handles group typing of the link (paho's goroutine).
func (e *ephemeral) receiveGroupTyping(gid string, payload []byte) {
	out, local, relay, err := translateGroupTyping(e.b.cfg.Region, e.link, gid, payload, e.b.readGroupRegions)
	if err != nil {
		e.b.m.ephemeral.WithLabelValues(e.link, kindInvalid).Inc()
		e.b.log.Debug("region link: group typing dropped", "link", e.link, "gid", gid, "err", err)
		return
	}
	e.b.m.ephemeral.WithLabelValues(e.link, kindGroupTyping).Inc()
	e.republish(out)
	if len(relay) > 0 {
		// The other regions with members: the group by its ID here, the
		// sender name@{link} (as out names them).
		var t wire.Typing
		_ = json.Unmarshal(out.Payload, &t)
		e.b.relayTyping(local, t, relay, e.link)
	}
}
