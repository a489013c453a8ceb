package broker

import (
	"encoding/json"
	"sync/atomic"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgechat/edgechat/internal/wire"
)

// Erased accounts and sessions left offline.
//
// Erasing an account deletes its direct conversations, both sides
// (docs/protocol.md, Deleting an account). A persistent session left
// offline queues its QoS 1 deliveries, and those of an erased account's
// conversations stayed queued: with --account-delete-grace 0 (or a
// session expiry longer than the grace period) the peer's session,
// resumed after the erasure, delivered messages that no history, sync or
// conversation list had any more. Every delivery out of such a queue
// happens when the session resumes (sessions never move between nodes),
// so that is where they go: before mochi hands the queue to the new
// connection (OnSessionEstablish runs before it inherits the session),
// the copies of direct messages from or to an erased account, and of its
// receipts, are taken out of it.

// OnSessionEstablish runs for an accepted CONNECT before its session
// inherits the one it resumes.
func (h *hook) OnSessionEstablish(cl *mqtt.Client, pk packets.Packet) {
	if cl.Net.Inline || pk.Connect.Clean || h.b.deps.Erased == nil {
		return // a clean start resumes nothing
	}
	if old, ok := h.b.srv.Clients.Get(cl.ID); ok && old != cl {
		h.b.dropErasedQueued(old)
	}
}

// dropErasedQueued takes out of cl's queue of unacknowledged deliveries
// those of an erased account's direct conversations.
func (b *Broker) dropErasedQueued(cl *mqtt.Client) {
	if cl.State.Inflight.Len() == 0 {
		return
	}
	for _, pk := range cl.State.Inflight.GetAll(false) {
		if pk.FixedHeader.Type != packets.Publish {
			continue
		}
		kind, ok := b.ofErased(pk)
		if !ok {
			continue
		}
		if cl.State.Inflight.DeletePacket(pk) {
			atomic.AddInt64(&b.srv.Info.Inflight, -1)
			b.m.dropped.WithLabelValues(kind.String(), "erased").Inc()
			b.log.Debug("queued delivery of an erased account's conversation dropped", "client", cl.ID, "topic", pk.TopicName)
		}
	}
}

// ofErased tells whether a queued delivery belongs to an erased
// account's direct conversation: a direct message from or to it (the
// stored envelope names both), or its receipt (its reader in the
// property from).
func (b *Broker) ofErased(pk packets.Packet) (wire.TopicKind, bool) {
	kind := wire.ParseTopic(pk.TopicName).Kind
	switch kind {
	case wire.KindDirect:
		var env struct{ From, To string }
		if json.Unmarshal(pk.Payload, &env) != nil {
			return kind, false
		}
		return kind, b.erased(env.From) || b.erased(env.To)
	case wire.KindReceipts:
		for _, p := range pk.Properties.User {
			if p.Key == "from" && b.erased(p.Val) {
				return kind, true
			}
		}
	}
	return kind, false
}

// erased is Deps.Erased: a local user ID, or a user of another region
// ("uid@region") that its region erased and this one erased too
// (bridge/region erasure.go: due at once).
func (b *Broker) erased(uid string) bool {
	return uid != "" && b.deps.Erased(uid)
}
