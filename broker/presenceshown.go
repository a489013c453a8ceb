package broker

import (
	"bytes"
	"sync"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgechat/edgechat/internal/wire"
)

// PresenceShown is told (after the commit, on every node) that viewer
// may see subject's presence again: subject lifted their block of viewer
// or added viewer to their contacts. A session of viewer that kept its
// subscription to presence/{subject} meanwhile had its deliveries
// refused (the delivery-time ACL), so the last status its client got
// may be one subject left long ago (online after every device left): it
// is handed the status retained now, as a new subscription would be.
// Sessions of this node only: every node runs it for its own.
func (b *Broker) PresenceShown(subject, viewer string) {
	topic := "presence/" + subject
	if viewer == "" || viewer == subject || wire.ParseTopic(topic).Kind != wire.KindPresence {
		return
	}
	for _, cl := range b.users.sessions(viewer) {
		sub, ok := cl.State.Subscriptions.Get(topic)
		if !ok {
			continue
		}
		go b.handPresence(cl, topic, sub.Identifier) // runs on the FSM's apply path: never wait on a client here
	}
	// A session of viewer waiting offline comes back without subscribing
	// again, so without the retained status: it is handed it then.
	for _, cl := range b.offlineSessions(viewer) {
		if _, ok := cl.State.Subscriptions.Get(topic); ok {
			b.owed.add(cl.ID, topic)
		}
	}
}

// PresenceShownInGroup is PresenceShown for users who joined group gid
// (told on every node, after the commit): each of them may see the
// presence of the group's members, and they theirs, whatever held
// before. uids's sessions that kept a subscription to presence/{m} of a
// member m, and members' sessions that kept one to presence/{uid}, are
// handed the status retained now (a subscription that was visible all
// along gets the status it has again). Sessions of this node only:
// every node runs it for its own. It looks at the new members' sessions
// and at the subscribers of their presence topics, never at every
// member of a big group.
func (b *Broker) PresenceShownInGroup(gid string, uids []string) {
	mem := b.deps.Membership
	if mem == nil || wire.ValidGroupID(gid) != nil {
		return
	}
	type pair struct{ subject, viewer string }
	shown := map[pair]struct{}{}
	for _, uid := range uids {
		if wire.ValidUserID(uid) != nil {
			continue // a member of another region: no session here
		}
		// uid watching members.
		for _, cl := range append(b.users.sessions(uid), b.offlineSessions(uid)...) {
			for filter := range cl.State.Subscriptions.GetAll() {
				if t := wire.ParseTopic(filter); t.Kind == wire.KindPresence && t.Owner != uid &&
					wire.ValidUserID(t.Owner) == nil && mem.IsMember(gid, t.Owner) {
					shown[pair{t.Owner, uid}] = struct{}{}
				}
			}
		}
		// Members watching uid.
		for id := range b.srv.Topics.Subscribers(wire.PresenceTopic(uid)).Subscriptions {
			if viewer, _, err := wire.ParseClientID(id); err == nil && viewer != uid && mem.IsMember(gid, viewer) {
				shown[pair{uid, viewer}] = struct{}{}
			}
		}
	}
	for p := range shown {
		b.PresenceShown(p.subject, p.viewer)
	}
}

// handOwedPresence hands a session that resumed (cl, just established)
// the statuses PresenceShown owed it while it was offline. A client ID
// that starts clean drops what was owed: it subscribes again.
func (b *Broker) handOwedPresence(cl *mqtt.Client) {
	for _, topic := range b.owed.take(cl.ID) {
		if sub, ok := cl.State.Subscriptions.Get(topic); ok {
			go b.handPresence(cl, topic, sub.Identifier)
		}
	}
}

// owedPresenceMax bounds the sessions owed a status: an entry whose
// session expired without coming back stays until its client ID
// connects again, so past this many they are dropped (their clients
// then keep the status they had, as before).
const owedPresenceMax = 100_000

// owedPresence are the presence topics to hand each offline session (by
// client ID) when it resumes.
type owedPresence struct {
	mu sync.Mutex
	m  map[string]map[string]struct{}
}

func (o *owedPresence) add(clientID, topic string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.m == nil || len(o.m) >= owedPresenceMax {
		o.m = make(map[string]map[string]struct{})
	}
	t := o.m[clientID]
	if t == nil {
		t = make(map[string]struct{}, 1)
		o.m[clientID] = t
	}
	t[topic] = struct{}{}
}

func (o *owedPresence) take(clientID string) []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	t, ok := o.m[clientID]
	if !ok {
		return nil
	}
	delete(o.m, clientID)
	out := make([]string, 0, len(t))
	for topic := range t {
		out = append(out, topic)
	}
	return out
}

// handPresence writes the presence retained on topic to cl, checked
// against the visibility rule as every delivery is. Should the status
// change while it is written, the new one goes too: the client never
// ends on an older status than the retained one (protocol.md). It
// carries subID, the subscription's identifier (0: none), as a delivery
// of that subscription would [MQTT-3.3.4-3].
func (b *Broker) handPresence(cl *mqtt.Client, topic string, subID int) {
	var sent []byte
	for range 3 {
		payload, ok := b.Retained(topic)
		if !ok || bytes.Equal(payload, sent) {
			return
		}
		if !allowed(b.principal(cl), b.cfg.Dev, b.deps.Visibility, b.deps.Membership, topic, false) {
			return
		}
		pk := packets.Packet{
			FixedHeader: packets.FixedHeader{Type: packets.Publish},
			TopicName:   topic,
			Payload:     payload,
		}
		if subID > 0 && cl.Properties.ProtocolVersion == 5 {
			pk.Properties.SubscriptionIdentifier = []int{subID}
		}
		err := cl.WritePacket(pk)
		if err != nil {
			b.log.Debug("presence not handed", "client", cl.ID, "topic", topic, "error", err)
			return
		}
		sent = payload
	}
}
