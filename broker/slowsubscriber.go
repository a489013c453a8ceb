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
	if cl.Closed() {
		b.lostOfflineSession(cl)
		return
	}
	v, ok := b.conns.Load(cl)
	if !ok {
		return
	}
	ci := v.(*connInfo)
	// A link's handoff is durable, not live.
	if ci.p.UserID == "" || ci.p.Link != "" {
		return
	}
	if !ci.established.Load() {
		// Still in its handshake: only a resumed session has deliveries
		// then (the node writes what the session held before its
		// handshake ends), and its client, told session present 1, need
		// not subscribe or sync again. It is told once established
		// (OnSessionEstablished), unless established meanwhile.
		ci.missedEarly.Store(true)
		if !ci.established.Load() {
			return
		}
	}
	b.tellToSync(cl, ci)
}

// tellToSync closes, once, a connection that missed a stored message or
// a presence update with DISCONNECT 0x89, so that its client syncs.
func (b *Broker) tellToSync(cl *mqtt.Client, ci *connInfo) {
	if !ci.toldToSync.CompareAndSwap(false, true) {
		return
	}
	b.m.refused.WithLabelValues("slow_subscriber").Inc()
	b.log.Info("a stored message or a presence update did not fit a client's queue: closed its connection so that it syncs",
		"user", ci.p.UserID, "client", cl.ID)
	// Not on the delivering goroutine: the DISCONNECT waits for the
	// client's socket, which is what is slow; a client still reading
	// gets the reason within slowDisconnectWait, one that is not has its
	// connection closed then. Its session ends with it (closeToSync);
	// marked lost at once (the caller may hold the session's lock).
	cl.LoseSession()
	go b.closeToSync(cl, slowDisconnectWait, busySlow)
}

// lostOfflineSession ends a persistent session left offline that could
// not take a stored message or a presence update: its store of
// unacknowledged deliveries is full (mochi's MaximumInflight, 1024; a
// day in busy groups). Resumed, it would hand the client the older ones
// and session present 1, and a client that trusts its session would
// never see the rest nor its contacts' current presence. Marked lost
// (under the session's lock: mochi calls OnPublishDropped so for this
// drop), the next connection of the client ID finds no session (session
// present 0): it subscribes again, gets the retained presence, and
// syncs. The session is ended now, its queue and subscriptions with it.
func (b *Broker) lostOfflineSession(cl *mqtt.Client) {
	if cl.Net.Inline || isLinkID(cl.ID) || !cl.LoseSession() {
		return
	}
	b.m.refused.WithLabelValues("session_overflow").Inc()
	b.log.Info("a persistent session left offline overflowed: ended, so that the client syncs when it comes back",
		"client", cl.ID, "queued", cl.State.Inflight.Len())
	go b.srv.EndSession(cl) // the caller holds the session's lock
}

// slowDisconnectWait is how long a slow subscriber has to read what was
// written to it before its DISCONNECT (a phone on a poor link draining
// a megabyte).
const slowDisconnectWait = 30 * time.Second
