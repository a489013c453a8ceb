package broker

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgechat/edgechat/internal/address"
	"github.com/edgechat/edgechat/internal/wire"
)

// allowed is the topic table of docs/protocol.md as an access check. For
// write it gets a topic name (a client publish); otherwise a subscription
// filter or, on delivery, a topic name. p is the client's identity (empty
// UserID: anonymous, dev mode only). It is a pure function of its
// arguments, so that it can be fuzzed.
//
// Rules: chat topics (under user/, group/, presence/) follow the table in
// every mode, on every delivery. Outside dev mode wildcards are allowed
// on chat topics only inside the user's own subtree (user/{self}/# and
// user/{self}/+) and inside the subtree of a group the user is a member
// of (group/{gid}/# and group/{gid}/+), $SYS is for admins to subscribe,
// and nothing else is open. In dev mode every other topic is open, and
// any wildcard filter (#, +/+, user/#, ...) and $SYS/# is granted, as on
// a plain MQTT broker: the delivery check (a topic name) then lets
// through, of the chat subtrees, only what the subscriber could have
// subscribed to by name. Shared subscriptions (dev mode only) never
// receive chat topics (see hook.OnSelectSubscribers).
func allowed(p wire.Principal, dev bool, vis PresenceVisibility, mem Membership, topic string, write bool) bool {
	if topic == "" {
		return false
	}
	if p.Link != "" {
		return linkAllowed(p, topic, write)
	}
	if write && strings.ContainsAny(topic, "+#") {
		return false // not a topic name (mochi refuses it first)
	}
	if !write {
		if rest, ok := sharedFilter(topic); ok {
			return dev && sharedAllowed(rest)
		}
		if strings.ContainsAny(topic, "+#") {
			return filterAllowed(p, dev, mem, topic)
		}
	}
	return nameAllowed(p, dev, vis, mem, topic, write)
}

// sharedAllowed decides the filter of a shared subscription (dev mode
// only). Shared subscriptions spread messages across several clients, so
// chat topics are never delivered to them: a filter that can only match
// chat topics (a chat prefix spelled out, like user/# or
// group/g1/newMessage) is refused, one that starts with a wildcard (#,
// +/x) is granted and gets the non-chat topics it matches. Reserved and
// $SYS topics are never shared.
func sharedAllowed(filter string) bool {
	return filter != "" && filter[0] != '$' && !underChat(filter)
}

// filterAllowed decides wildcard subscriptions.
func filterAllowed(p wire.Principal, dev bool, mem Membership, filter string) bool {
	if strings.HasPrefix(filter, "$") {
		return strings.HasPrefix(filter, "$SYS/") && (dev || p.Admin && p.UserID != "")
	}
	if dev {
		// Granted like on a plain broker; each delivery is checked by
		// name (devOpen, nameAllowed), which keeps chat topics to those
		// who may read them.
		return true
	}
	if p.UserID != "" && (filter == "user/"+p.UserID+"/#" || filter == "user/"+p.UserID+"/+") {
		return true
	}
	if gid, ok := groupWildcard(filter); ok {
		return groupAllowed(p, mem, gid)
	}
	return false
}

// devOpen reports whether a topic name is open to everyone in dev mode:
// it is neither under a chat prefix nor reserved ($). It decides most dev
// deliveries without parsing the topic or looking up the client, and
// gives the answer nameAllowed would give.
func devOpen(name string) bool {
	return name != "" && name[0] != '$' && !underChat(name)
}

// nameAllowed decides a topic name (a publish, an exact subscription or a
// delivery).
func nameAllowed(p wire.Principal, dev bool, vis PresenceVisibility, mem Membership, name string, write bool) bool {
	if dev && devOpen(name) {
		return true // KindOther: open in dev mode
	}
	t := wire.ParseTopic(name)
	uid := p.UserID
	switch t.Kind {
	case wire.KindDirect, wire.KindUserTyping, wire.KindReceipts:
		// Any authenticated user may write to uid (blocks are checked
		// by the publish handlers, which drop rather than disconnect a
		// 3.1.1 client); only uid reads.
		if write {
			return uid != ""
		}
		return uid != "" && uid == t.Owner
	case wire.KindEvents:
		return !write && uid != "" && uid == t.Owner
	case wire.KindPresence:
		if write || uid == "" {
			return false // the server publishes presence
		}
		return uid == t.Owner || (vis != nil && vis.CanSeePresence(uid, t.Owner))
	case wire.KindHeartbeat:
		return write && uid != "" && uid == t.Owner
	case wire.KindGroup, wire.KindGroupTyping:
		// Members publish and subscribe. Deliveries to offline
		// sessions and in dev mode are checked here too; live sessions'
		// group subscriptions are dropped on removal instead
		// (groupDeliveryChecked).
		return groupAllowed(p, mem, t.Owner)
	case wire.KindSys:
		return !write && (dev || p.Admin && uid != "")
	case wire.KindChatInvalid:
		return false
	}
	if strings.HasPrefix(name, "$") {
		return false // reserved for the broker
	}
	return dev
}

// archiveDecides reports whether a publish to topic that the access
// check would refuse goes on to the archive instead: a signed-in user's
// group message, of someone the member cache does not list. The archive
// decides it: it catches up with the cluster first (a member just added
// through another node; 0x83, retry, when it cannot: a member must not
// be told they are not one), refuses a non-member's message (0x87), and
// answers the retry of a message stored before its sender left the
// group with the original (its PUBACK was lost: 0x87 would tell the
// client that a delivered message failed).
func archiveDecides(p wire.Principal, topic string) bool {
	return p.UserID != "" && p.Link == "" && wire.ParseTopic(topic).Kind == wire.KindGroup
}

// sharedFilter splits "$share/{group}/{filter}" (mochi matches the
// prefix case-insensitively) and returns the filter.
func sharedFilter(f string) (string, bool) {
	first, rest, ok := strings.Cut(f, "/")
	if !ok || !strings.EqualFold(first, "$share") {
		return "", false
	}
	_, filter, _ := strings.Cut(rest, "/")
	return filter, true
}

// underChat reports whether a topic name or filter starts with a chat
// prefix spelled out (user, group or presence as its first level). Unlike
// wire.IsChatPrefix, a leading wildcard does not count.
func underChat(s string) bool {
	first, _, _ := strings.Cut(s, "/")
	return first == "user" || first == "group" || first == "presence"
}

// aclCatchUpTimeout bounds how long a refused publish or subscription
// waits for this node to apply what the cluster committed before it.
const aclCatchUpTimeout = 2 * time.Second

// catchUp is what mayBeLagging found.
type catchUp int

const (
	notLagging    catchUp = iota // the refusal stands
	caughtUp                     // check again
	cannotCatchUp                // the node cannot tell: it reaches no leader
)

// mayBeLagging is called for a refused access check. For a client's own
// publish or subscription (not a delivery) to a group or presence topic,
// whose answer depends on state another node may have changed a moment
// ago (a member added, a contact made), it waits until this node has
// applied what the cluster committed before: caughtUp, the caller checks
// again; cannotCatchUp when that wait fails. Publishes and presence
// subscriptions wait only when refused, so their allowed path costs
// nothing; a SUBSCRIBE that names a group caught up before its filters
// were checked (catchUpToSubscribe). A SUBSCRIBE waits once at most:
// its other refusals take the first one's answer. The wait holds up
// only the refused client's own packets.
func (b *Broker) mayBeLagging(cl *mqtt.Client, p wire.Principal, topic string, write bool) catchUp {
	if b.deps.ReadBarrier == nil || p.UserID == "" || p.Link != "" || !stateDependent(topic, write) {
		return notLagging
	}
	if !write {
		if !b.subscribingTo(cl, topic) {
			return notLagging // a delivery: the subscription was checked already
		}
		ci := b.connOf(cl)
		if ci == nil {
			return notLagging
		}
		switch catchUp(ci.subCatchUp.Load()) {
		case caughtUp:
			return notLagging // checked on the caught-up state: the refusal stands
		case cannotCatchUp:
			return cannotCatchUp // no second wait in the same SUBSCRIBE
		}
		c := b.catchUp(cl, topic)
		ci.subCatchUp.Store(int32(c)) // for the SUBSCRIBE's other filters
		return c
	}
	return b.catchUp(cl, topic)
}

// catchUp waits, up to aclCatchUpTimeout, until this node has applied
// what the cluster committed before the call.
func (b *Broker) catchUp(cl *mqtt.Client, topic string) catchUp {
	ctx, cancel := context.WithTimeout(b.baseCtx, aclCatchUpTimeout)
	defer cancel()
	if err := b.deps.ReadBarrier(ctx); err != nil {
		b.log.Debug("access check: cannot catch up with the cluster", "client", cl.ID, "topic", topic, "err", err)
		return cannotCatchUp
	}
	return caughtUp
}

// catchUpToSubscribe is called as a client's SUBSCRIBE begins, in its read
// loop, before mochi checks the filters. A SUBSCRIBE that names a group's
// topics (memberFilter) is checked only once this node has applied
// everything the cluster committed before it: one read barrier per
// SUBSCRIBE, whatever it grants. Checked on this node's state alone, a
// member removed and added back at once through another node, whose
// client subscribed again here as soon as group.member_added reached it
// (the SDK does), was granted the subscription on the state from before
// the removal when this node had not applied the removal yet; applying
// it a moment later dropped that subscription (DropGroupSubscriptions),
// and the client, told SUBACK success, got nothing from the group, with
// no sign of it. Caught up, the check sees the removal and the re-add,
// and a removal committed after the SUBSCRIBE arrived is seen by
// recheckGroupSubscriptions: a granted group subscription is one that
// only a later removal takes away.
//
// The cost: a round trip to the leader (shared with the reads waiting
// meanwhile; nothing on a single node) per SUBSCRIBE that names a group,
// at connection and on joining a group, holding up that client's packets
// only; deliveries, publishes and other subscriptions never wait for it.
// When the node cannot catch up (no leader answers within
// aclCatchUpTimeout) the SUBSCRIBE's group filters are withheld: refused
// (a subscription the client held already is left as it was) and
// answered 0x83, "retry" (retryUnverified), as a group filter that only
// the catch-up could have allowed is. While withheld, a delivery of one
// of those topic names to this client is refused too (mochi checks a
// filter and a delivery with the same call): until the SUBACK, on a node
// that reaches no leader.
func (b *Broker) catchUpToSubscribe(cl *mqtt.Client, ci *connInfo, filters packets.Subscriptions) {
	ci.subCatchUp.Store(int32(notLagging))
	ci.withheld.Store(nil)
	if b.deps.ReadBarrier == nil || cl.Net.Inline {
		return
	}
	if p := principalOf(ci, cl); p.UserID == "" || p.Link != "" {
		return
	}
	var groups []string
	for _, sub := range filters {
		if memberFilter(sub.Filter) {
			groups = append(groups, sub.Filter)
		}
	}
	if len(groups) == 0 {
		return
	}
	c := b.catchUp(cl, groups[0])
	if c == cannotCatchUp {
		ci.withheld.Store(&groups)
	}
	ci.subCatchUp.Store(int32(c))
}

// memberFilter reports whether filter is one a group's members may
// subscribe to: group/{gid}/newMessage, group/{gid}/typing, group/{gid}/+
// or group/{gid}/#. DropGroupSubscriptions drops them at a removal.
func memberFilter(filter string) bool {
	if !strings.HasPrefix(filter, "group/") {
		return false
	}
	if _, ok := groupWildcard(filter); ok {
		return true
	}
	if strings.ContainsAny(filter, "+#") {
		return false
	}
	k := wire.ParseTopic(filter).Kind
	return k == wire.KindGroup || k == wire.KindGroupTyping
}

// withheldFrom reports whether topic is one of the group filters of the
// SUBSCRIBE cl is processing that could not be checked against the
// cluster (catchUpToSubscribe).
func (b *Broker) withheldFrom(cl *mqtt.Client, topic string) bool {
	if !strings.HasPrefix(topic, "group/") {
		return false
	}
	ci := b.connOf(cl)
	if ci == nil {
		return false
	}
	w := ci.withheld.Load()
	return w != nil && slices.Contains(*w, topic)
}

// retryUnverified turns the v5 SUBACK code of each filter refused only
// because this node could not catch up with the cluster to check it
// (mayBeLagging, catchUpToSubscribe: a member whose node cannot reach
// its leader) from 0x87
// "not authorized", which clients take as final, into 0x83
// "implementation specific error", which they retry, as a group message
// on such a node is answered. mochi builds the SUBACK from reasonCodes
// after OnSubscribed, which hands the same slice (the copy in
// third_party is what we build with). A 3.1.1 SUBACK has 0x80 for any
// failure.
func (b *Broker) retryUnverified(cl *mqtt.Client, filters packets.Subscriptions, reasonCodes []byte) {
	ci := b.connOf(cl)
	if ci == nil {
		return
	}
	unverified := ci.unverified
	ci.unverified = nil
	if w := ci.withheld.Load(); w != nil {
		unverified = append(unverified, *w...)
	}
	if len(unverified) == 0 {
		return
	}
	if cl.Properties.ProtocolVersion != 5 {
		return
	}
	for i, sub := range filters {
		if i < len(reasonCodes) && reasonCodes[i] == packets.ErrNotAuthorized.Code && slices.Contains(unverified, sub.Filter) {
			reasonCodes[i] = packets.ErrImplementationSpecificError.Code
		}
	}
}

// stateDependent reports whether access to topic (a name or a filter)
// depends on replicated state that changes: group membership, presence
// visibility (for reading; only the server publishes presence).
func stateDependent(topic string, write bool) bool {
	return strings.HasPrefix(topic, "group/") || !write && strings.HasPrefix(topic, "presence/")
}

// subscribingTo reports whether filter is one of those of the SUBSCRIBE
// cl is processing.
func (b *Broker) subscribingTo(cl *mqtt.Client, filter string) bool {
	ci := b.connOf(cl)
	if ci == nil {
		return false
	}
	subs := ci.subscribingTo.Load()
	if subs == nil {
		return false
	}
	for _, sub := range *subs {
		if sub.Filter == filter {
			return true
		}
	}
	return false
}

// ownQualifiedPresence tells whether topic is presence/{name}@{this
// region}: the presence of the local user name under a name the server
// never publishes (it publishes presence/{name}; mochi delivers a
// publish under its own topic name only, so such a subscription would
// get nothing). It is refused to everyone, with ownPresenceReason.
func (b *Broker) ownQualifiedPresence(topic string) (name string, ok bool) {
	rest, ok := strings.CutPrefix(topic, "presence/")
	if !ok || b.cfg.Region == "" || strings.IndexByte(rest, '@') < 0 {
		return "", false
	}
	a, err := address.Parse(rest)
	if err != nil || a.Region != b.cfg.Region || wire.ValidUserID(a.Name) != nil {
		return "", false
	}
	return a.Name, true
}

// ownPresenceReason is the v5 SUBACK reason string for a SUBSCRIBE whose
// refused filters include presence/{name}@{this region}: which topic to
// subscribe to instead.
func (b *Broker) ownPresenceReason(filters packets.Subscriptions, reasonCodes []byte) string {
	for i, sub := range filters {
		if i < len(reasonCodes) && reasonCodes[i] >= packets.ErrUnspecifiedError.Code {
			if name, ok := b.ownQualifiedPresence(sub.Filter); ok {
				return fmt.Sprintf("not authorized: %s is the presence of the local user %s, published on presence/%s only: subscribe to presence/%s", sub.Filter, name, name, name)
			}
		}
	}
	return ""
}
