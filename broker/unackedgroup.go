package broker

import (
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgechat/edgechat/internal/snowflake"
	"github.com/edgechat/edgechat/internal/wire"
)

// GroupUnackedDeliveries may be implemented by Deps.Unacked to leave out
// of the ack watch the deliveries of a group message that can never be
// pushed: in a group above --push-group-limit only members who are
// mentioned, whose message it answers or who opted in are pushed, so a
// delivery to any other member is watched for nothing (a deferred
// delivery held in the watch for the ack timeout and, from a half-open
// device, reported through Raft; a 10,000-member group at 10 messages/s
// filled the watch's bound of 1M deliveries).
type GroupUnackedDeliveries interface {
	// WatchGroup reports whether the delivery of message id of group gid
	// (payload: its envelope) to a device of uid is worth watching:
	// false only when uid can never be pushed for it. O(1) for every
	// delivery of a message but its first; it never blocks for long.
	WatchGroup(uid, gid string, id snowflake.ID, payload []byte) bool
}

// watchGroup reports whether w watches the delivery pk (message id) to a
// device of uid as far as its group goes: true for anything but a group
// message (and for a topic name an outbound alias hid) unless Deps.Unacked
// says the member can never be pushed for it.
func (w *ackWatch) watchGroup(uid string, pk packets.Packet, id snowflake.ID) bool {
	g, ok := w.to.(GroupUnackedDeliveries)
	if !ok || pk.TopicName == "" {
		return true
	}
	t := wire.ParseTopic(pk.TopicName)
	if t.Kind != wire.KindGroup {
		return true
	}
	return g.WatchGroup(uid, t.Owner, id, pk.Payload)
}
