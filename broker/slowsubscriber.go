package broker

import (
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgechat/edgechat/internal/wire"
)

// A stored chat message that does not reach a connected client is one
// that client cannot know it missed: message IDs have gaps by design, and
// it syncs only when it reconnects (LESSONS 8). So a node that drops one
// (the client's outbound queue is full: it reads more slowly than its
// messages come; or this node's own queue of committed messages is full)
// closes the connections concerned with DISCONNECT 0x89 Server busy, as
// after a catch-up from a snapshot: the client reconnects, subscribes and
// syncs, and gets what was dropped from history. A dropped presence
// update is the same: the client would show that user's old status for
// as long as it does not change again; once it reconnects it subscribes
// again and gets the retained, current one. Other kinds (typing,
// receipts, plain MQTT topics) are not stored, and a dropped one only
// counts, as in mochi.

// missedStored is called when a delivery of pk to cl was dropped.
func (b *Broker) missedStored(cl *mqtt.Client, pk packets.Packet) {
	if k := wire.ParseTopic(pk.TopicName).Kind; !k.Archived() && k != wire.KindPresence {
		return
	}
	v, ok := b.conns.Load(cl)
	if !ok {
		return
	}
	ci := v.(*connInfo)
	// A link's handoff is durable, not live; a connection still in its
	// handshake subscribes and syncs after it anyway.
	if ci.p.UserID == "" || ci.p.Link != "" || !ci.established.Load() {
		return
	}
	if !ci.toldToSync.CompareAndSwap(false, true) {
		return
	}
	b.m.refused.WithLabelValues("slow_subscriber").Inc()
	b.log.Info("a stored message or a presence update did not fit a client's outbound queue: closed its connection so that it syncs",
		"user", ci.p.UserID, "client", cl.ID)
	// Not on the delivering goroutine: the DISCONNECT waits for the
	// client's socket, which is what is slow; a client still reading
	// gets the reason within slowDisconnectWait, one that is not has its
	// connection closed then.
	go func() { _ = b.srv.DisconnectClientWithin(cl, packets.ErrServerBusy, slowDisconnectWait) }()
}

// slowDisconnectWait is how long a slow subscriber has to read what was
// written to it before its DISCONNECT (a phone on a poor link draining
// a megabyte).
const slowDisconnectWait = 30 * time.Second
