package archive

import (
	"encoding/json"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgechat/edgechat/internal/snowflake"
	"github.com/edgechat/edgechat/internal/wire"
)

// Live delivery of committed messages.
//
// Every node delivers each chat message its own FSM stores to its own
// subscribers, once the entry's transaction is committed
// (applied.AfterCommit hands it to Deps.Live). Until the twenty-second
// session the node a message was sent on delivered it and forwarded it to
// the nodes with subscribers: a message committed there just before that
// node crashed reached the others' subscribers only at their next sync,
// and every delivery to another node cost a peer RPC. Now a subscriber
// gets a message when the node it is connected to applies it: in commit
// order, whatever happened to the sender's node, and with nothing sent
// between nodes but the Raft log.
//
// A node delivers only what was appended while it was running (with
// liveSkew for the leader's clock): what it applies after a restart is
// history its clients read through sync, not news. What a snapshot from
// the leader brings is never applied message by message: the node then
// closes its clients' connections so that they sync (node.go,
// Broker.ResyncClients).

// LiveDelivery takes the committed messages this node delivers to its
// own subscribers (the broker). DeliverCommitted is called on the FSM's
// goroutine for every stored message: it must not block (queue, then
// deliver in the order given).
type LiveDelivery interface {
	DeliverCommitted(o wire.Outbound)
}

// liveSkew is how much earlier than this process's start a message may
// have been appended and still be delivered live: the leader's clock may
// be behind this node's. A message of that window may reach a client
// that also reads it by sync (the SDK drops the duplicate by id).
const liveSkew = 5 * time.Second

// liveMetrics count what the archive handed to live delivery.
type liveMetrics struct {
	handed prometheus.Counter // messages handed to LiveDelivery
	stale  prometheus.Counter // applied, not delivered: appended before this node started
}

func newLiveMetrics() liveMetrics {
	return liveMetrics{
		handed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgechat_archive_live_messages_total",
			Help: "Committed messages this node handed to its own subscribers' live delivery.",
		}),
		stale: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgechat_archive_live_skipped_total",
			Help: "Committed messages this node applied but did not deliver live: appended before it started (clients read them by sync).",
		}),
	}
}

func (m liveMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.handed, m.stale}
}

// live is the FSM state's part of live delivery (nil: none).
type live struct {
	to    LiveDelivery
	since time.Time // deliver what was appended after this
	m     liveMetrics
}

// liveMessage is what a stored message needs for its delivery.
type liveMessage struct {
	id              snowflake.ID
	from, to, group string
	payload         []byte
	appended        time.Time
}

// deliver hands a committed message to the node's subscribers.
func (l *live) deliver(msg *liveMessage) {
	if msg.appended.IsZero() || msg.appended.Before(l.since) {
		l.m.stale.Inc()
		return
	}
	props := []wire.Prop{{Key: "id", Value: msg.id.String()}, {Key: "from", Value: msg.from}}
	for _, t := range deliveryTopics(msg.from, msg.to, msg.group) {
		l.to.DeliverCommitted(wire.Outbound{Topic: t, Payload: msg.payload, QoS: 1, UserProps: props, Scope: wire.ScopeLocal})
	}
	l.m.handed.Inc()
}

// readEvent is what a moved read cursor tells the reader's own devices
// on user/{reader}/events, once committed:
//
//	{"type":"conversation.read","data":{"peer":"bob","upTo":"…","unread":0}}
//
// ("group" instead of "peer" for a group), unread being the server's
// count after the move (capped as in the conversation list). Every node
// tells its own subscribers from its own apply, as it delivers messages,
// so each device hears of a read once, whichever device read and through
// whichever node, MQTT receipt or POST /chat/read. Before, no device
// heard of its user's reads: the others kept counting unread what was
// read elsewhere until they read the conversation list again.
type readEvent struct {
	live                *live // nil: no live delivery
	reader, peer, group string
	upTo                snowflake.ID
	unread              int
	appended            time.Time
}

// ReadEventType is the type of the event a read tells the reader's devices.
const ReadEventType = "conversation.read"

// deliver hands the event to this node's subscribers (nothing for a read
// appended before this node started: history, not news).
func (e *readEvent) deliver() {
	l := e.live
	if l == nil || e.appended.IsZero() || e.appended.Before(l.since) {
		return
	}
	data := struct {
		Peer   string `json:"peer,omitempty"`
		Group  string `json:"group,omitempty"`
		UpTo   string `json:"upTo"`
		Unread int    `json:"unread"`
	}{e.peer, e.group, e.upTo.String(), e.unread}
	payload, err := json.Marshal(wire.Event{Type: ReadEventType, Data: data})
	if err != nil {
		return
	}
	l.to.DeliverCommitted(wire.Outbound{Topic: wire.EventsTopic(e.reader), Payload: payload, QoS: 1, Scope: wire.ScopeLocal})
}

// deliveryTopics are the topics a stored message is delivered on: a
// group's topic (group/{gid}@{home} for a group of another region, whose
// local members subscribe to that), or the recipient's and the sender's
// own (all of their devices), leaving out users of other regions (the
// region link carries a message to them).
func deliveryTopics(from, to, group string) []string {
	if group != "" {
		return []string{wire.GroupTopic(group)}
	}
	topics := make([]string, 0, 2)
	if strings.IndexByte(to, '@') < 0 {
		topics = append(topics, wire.DirectTopic(to))
	}
	if from != to && strings.IndexByte(from, '@') < 0 {
		topics = append(topics, wire.DirectTopic(from))
	}
	return topics
}

// DeliversCommitted reports whether every node delivers the messages it
// stores itself (Deps.Live is set): callers that store a message then
// only forward it to nodes of an earlier version (wire.ScopeOlderPeers).
func (s *Service) DeliversCommitted() bool { return s.st.live != nil }

var _ wire.CommittedDeliverer = (*Service)(nil)
