package broker

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgechat/edgechat/internal/wire"
)

// groupAllowed: members of gid publish and subscribe to its topics,
// nobody else (and nobody at all without a Membership).
func groupAllowed(p wire.Principal, mem Membership, gid string) bool {
	return p.UserID != "" && mem != nil && wire.ValidGroupID(gid) == nil && mem.IsMember(gid, p.UserID)
}

// groupWildcard recognises the wildcard filters a member may use on a
// group's subtree, group/{gid}/+ and group/{gid}/#, and returns gid. Any
// other wildcard under group/ (group/+/newMessage, group/#) is not one.
func groupWildcard(filter string) (string, bool) {
	rest, ok := strings.CutPrefix(filter, "group/")
	if !ok {
		return "", false
	}
	gid, last, ok := strings.Cut(rest, "/")
	if !ok || (last != "+" && last != "#") || wire.ValidGroupID(gid) != nil {
		return "", false
	}
	return gid, true
}

// publishGroup commits a group message like publishDirect commits a
// direct one, then delivers it to group/{gid}/newMessage: every member's
// subscribed devices, the sender's own included (they are members too).
func (b *Broker) publishGroup(cl *mqtt.Client, pk packets.Packet, p wire.Principal, gid, class string) (packets.Packet, error) {
	send := sendChat{
		sync: func(ctx context.Context, env wire.Envelope) (wire.Envelope, []byte, bool, error) {
			return b.deps.Chat.SendGroup(ctx, p.UserID, gid, env)
		},
	}
	if ps, ok := b.deps.Chat.(PipelinedChatStore); ok {
		send.start = func(ctx context.Context, env wire.Envelope) (func(context.Context) (wire.Envelope, []byte, bool, error), error) {
			return ps.StartGroup(ctx, p.UserID, gid, env)
		}
	}
	return b.commitChat(cl, pk, p, class, "group", send, wire.GroupTopic(gid))
}

// groupDeliveryChecked reports whether a delivery of topic (a group
// message or group typing) to cl may skip the membership look-up: a big
// group's fan-out asked the member cache once per member and message
// (issue 10: a fifth of the user CPU of a 1,000-member delivery).
//
// It may when cl is a live, established connection outside dev mode,
// and not processing a SUBSCRIBE.
// There every subscription that matches a group topic is under
// group/{gid}/ (an exact name, group/{gid}/+ or group/{gid}/#; no other
// wildcard reaches chat topics), and each was granted only to a member
// of gid, at SUBSCRIBE or, for those a resumed session brought, by
// dropRevokedSubscriptions before established was set. A member who
// loses membership loses those subscriptions when the removal commits,
// on every node (DropGroupSubscriptions, called by the users service in
// the same step that invalidates its member cache), a SUBSCRIBE that
// raced with a removal is checked again once it is in place
// (recheckGroupSubscriptions), and a snapshot restore re-checks every
// live session (RecheckSubscriptions). So the subscriptions that remain
// are exactly those the delivery check would grant. Disconnected
// persistent sessions (still queued QoS 1 messages) and dev mode, where
// wildcards such as # reach chat topics, keep the check on every
// delivery.
func (b *Broker) groupDeliveryChecked(cl *mqtt.Client, topic string) bool {
	if b.cfg.Dev || len(topic) < len("group/") || topic[:len("group/")] != "group/" {
		return false
	}
	if k := wire.ParseTopic(topic).Kind; k != wire.KindGroup && k != wire.KindGroupTyping {
		return false
	}
	ci := b.connOf(cl)
	if ci == nil {
		return false
	}
	// While a SUBSCRIBE is processed, mochi checks its filters through
	// the same hook call: those are no deliveries.
	return ci.established.Load() && ci.subscribing.Load() == 0
}

// recheckGroupSubscriptions checks the group subscriptions a SUBSCRIBE
// has just granted (mochi added them before OnSubscribed) against
// membership again and drops those no longer allowed. A removal that
// committed between the SUBSCRIBE's ACL check and the subscription's
// addition found nothing to drop (DropGroupSubscriptions ran too early);
// this check comes after the addition, so one of the two sees the other
// (both go through locks), and the delivery path may rely on group
// subscriptions being a member's (groupDeliveryChecked).
func (b *Broker) recheckGroupSubscriptions(cl *mqtt.Client, filters packets.Subscriptions, reasonCodes []byte) {
	if b.cfg.Dev || cl.Net.Inline {
		return
	}
	var p wire.Principal
	looked := false
	for i, sub := range filters {
		if i >= len(reasonCodes) || reasonCodes[i] >= packets.ErrUnspecifiedError.Code || !strings.HasPrefix(sub.Filter, "group/") {
			continue
		}
		if !looked {
			p, looked = b.principal(cl), true
		}
		if !allowed(p, b.cfg.Dev, b.deps.Visibility, b.deps.Membership, sub.Filter, false) {
			b.dropSubscription(cl, sub.Filter)
		}
	}
}

// RecheckSubscriptions checks every live session's subscriptions against
// the current state and drops those no longer allowed. The node calls it
// after a snapshot restore, which can remove group members without the
// per-removal callback (DropGroupSubscriptions) ever running on this
// node.
func (b *Broker) RecheckSubscriptions() {
	b.conns.Range(func(k, v any) bool {
		if ci := v.(*connInfo); ci.p.UserID != "" {
			b.dropRevokedSubscriptions(k.(*mqtt.Client), ci.p)
		}
		return true
	})
}

// DropGroupSubscriptions removes every subscription of uid's live
// sessions on this node to filters under group/{gid}/. The users service
// calls it (on every node) right after a membership removal commits.
// MQTT v5 has no server-initiated UNSUBSCRIBE, so the client is not told;
// deliveries just stop. It is what stops them: deliveries to live
// sessions do not look membership up again (groupDeliveryChecked). It
// also keeps a later re-add from reviving the subscriptions silently. It
// is cheap (the user's own sessions only) and safe from any goroutine.
//
// Disconnected persistent sessions are cleaned when they reconnect (see
// dropRevokedSubscriptions); until then the delivery-time ACL, which
// still looks membership up for them, keeps them from receiving
// anything.
func (b *Broker) DropGroupSubscriptions(gid, uid string) {
	if wire.ValidGroupID(gid) != nil || uid == "" {
		return
	}
	prefix := "group/" + gid + "/"
	for _, cl := range b.users.sessions(uid) {
		for filter := range cl.State.Subscriptions.GetAll() {
			if strings.HasPrefix(filter, prefix) {
				b.dropSubscription(cl, filter)
			}
		}
	}
}

// dropRevokedSubscriptions removes the subscriptions of a session that
// its user may no longer hold: a resumed persistent session inherits its
// filters from before, when the user may still have been a group member
// or allowed to see a presence.
func (b *Broker) dropRevokedSubscriptions(cl *mqtt.Client, p wire.Principal) {
	for filter := range cl.State.Subscriptions.GetAll() {
		if !allowed(p, b.cfg.Dev, b.deps.Visibility, b.deps.Membership, filter, false) {
			b.dropSubscription(cl, filter)
		}
	}
}

// dropSubscription does what mochi's UNSUBSCRIBE processing does for one
// filter, without an UNSUBACK (there was no UNSUBSCRIBE).
func (b *Broker) dropSubscription(cl *mqtt.Client, filter string) {
	if _, ok := cl.State.Subscriptions.Get(filter); !ok {
		return
	}
	cl.State.Subscriptions.Delete(filter)
	if b.srv.Topics.Unsubscribe(filter, cl.ID) {
		atomic.AddInt64(&b.srv.Info.Subscriptions, -1)
	}
	if b.rk != nil { // mochi's OnUnsubscribed does not run for this
		b.rk.unsubscribed(cl.ID, filter)
	}
	b.m.refused.WithLabelValues("subscription_revoked").Inc()
	b.log.Debug("subscription revoked", "client", cl.ID, "filter", filter)
}

// userIndex maps a user ID to their live sessions on this node.
type userIndex struct {
	mu sync.Mutex
	m  map[string]map[*mqtt.Client]struct{}
}

func (x *userIndex) add(uid string, cl *mqtt.Client) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.m == nil {
		x.m = make(map[string]map[*mqtt.Client]struct{})
	}
	s := x.m[uid]
	if s == nil {
		s = make(map[*mqtt.Client]struct{}, 1)
		x.m[uid] = s
	}
	s[cl] = struct{}{}
}

func (x *userIndex) remove(uid string, cl *mqtt.Client) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if s := x.m[uid]; s != nil {
		delete(s, cl)
		if len(s) == 0 {
			delete(x.m, uid)
		}
	}
}

// sessions is a snapshot, so that callers work without the lock.
func (x *userIndex) sessions(uid string) []*mqtt.Client {
	x.mu.Lock()
	defer x.mu.Unlock()
	s := x.m[uid]
	out := make([]*mqtt.Client, 0, len(s))
	for cl := range s {
		out = append(out, cl)
	}
	return out
}
