// SPDX-License-Identifier: MIT
// SPDX-FileCopyrightText: 2023 mochi-mqtt, mochi-co

package mqtt

import (
	"bytes"
	"errors"
	"sync/atomic"

	"github.com/mochi-mqtt/server/v2/packets"
)

// flushQueued is queued after a direct write that the socket did not take
// in full: it tells the write loop to write out what is left in outbuf.
var flushQueued = new(packets.Packet)

// writeDirect writes a packet from the caller's goroutine, without waking
// the client's write loop, when nothing is queued for the client, no write
// is in progress and the connection is a plain socket (see
// Options.ClientDirectWrites). It never blocks on the connection: the
// bytes the socket does not take at once stay in outbuf and go out from
// the write loop before anything queued later, so packets keep their
// order, and a slow client still fills its own queue only. It reports
// whether the packet was dealt with; false means the caller queues it as
// usual. With f (the deliveries of one publish), the encoding is shared
// with the other subscribers whose packet encodes the same.
func (cl *Client) writeDirect(pk packets.Packet, f *fanout) bool {
	rc := cl.Net.raw
	if rc == nil || cl.outboundLen() > 0 || atomic.LoadInt32(&cl.State.outboundQty) > 0 {
		return false
	}
	if !cl.TryLock() {
		return false // a write is in progress (the write loop, or an ack from the read loop)
	}
	if cl.Net.outbuf != nil || cl.outboundLen() > 0 || atomic.LoadInt32(&cl.State.outboundQty) > 0 {
		cl.Unlock()
		return false
	}

	pk = cl.prepareEncode(pk)
	var b []byte
	var err error
	if f != nil {
		b, err = f.encode(&pk)
	} else {
		var buf *bytes.Buffer
		if buf, err = encodePrepared(pk); err == nil {
			b = buf.Bytes()
		}
	}
	if err != nil {
		cl.Unlock()
		cl.ops.log.Debug("failed publishing packet", "error", err, "client", cl.ID, "packet", pk)
		cl.discardUnsendable(pk, err)
		return true // the write loop would fail in the same way
	}

	n, err := writeNonBlocking(rc, b, cl.ops.options.ClientRawSyscalls)
	if err != nil {
		cl.Unlock()
		cl.ops.log.Debug("failed publishing packet", "error", err, "client", cl.ID, "packet", pk)
		return true // the connection is broken; the read loop ends it
	}
	if n < len(b) {
		rest := b[n:]
		if f != nil {
			rest = append([]byte(nil), rest...) // b may be shared
		}
		cl.Net.outbuf = bytes.NewBuffer(rest)
		// When the queue is full the write loop has packets, and writes
		// outbuf out before them.
		_ = cl.enqueueOutbound(flushQueued)
	}
	cl.Unlock()

	atomic.AddInt64(&cl.ops.info.BytesSent, int64(len(b)))
	atomic.AddInt64(&cl.ops.info.PacketsSent, 1)
	if pk.FixedHeader.Type == packets.Publish {
		atomic.AddInt64(&cl.ops.info.MessagesSent, 1)
		cl.aliasSent(&pk)
	}
	cl.ops.hooks.OnPacketSent(cl, pk, b)
	return true
}

// publishSizeHint is about the encoded size of a PUBLISH packet: fixed
// header, topic, packet ID, the common properties and the payload.
func publishSizeHint(pk *packets.Packet) int {
	n := 16 + len(pk.TopicName) + len(pk.Payload) + len(pk.Properties.ContentType) +
		len(pk.Properties.ResponseTopic) + len(pk.Properties.CorrelationData)
	for _, u := range pk.Properties.User {
		n += 5 + len(u.Key) + len(u.Val)
	}
	return n
}

// discardUnsendable completes a QoS>0 delivery that cannot be encoded
// within the client's Maximum Packet Size as if it had been sent
// [MQTT-3.1.2-25] (edgechat patch 33): it leaves the inflight messages
// and gives its send quota back. It stayed inflight, never written,
// holding a unit of the client's Receive Maximum for good (with a
// Receive Maximum of 1 the client got nothing more) and failing every
// resend when the session resumed. The caller sends the held messages
// the quota lets go. It reports whether pk was such a delivery.
//
// A delivery of any QoS dropped so is told to the hooks as one dropped
// instead of delivered (OnPublishDropped; edgechat patch 52): the
// client never learns of it, and a hook may need it to (edgechat
// closes the connection of a client that missed a chat message, so
// that it syncs).
func (cl *Client) discardUnsendable(pk packets.Packet, err error) bool {
	if !errors.Is(err, packets.ErrPacketTooLarge) || pk.FixedHeader.Type != packets.Publish {
		return false
	}
	if pk.TopicName == "" && pk.Properties.TopicAlias > 0 {
		// Sent by alias alone: the hooks are told its topic.
		pk.TopicName = cl.State.TopicAliases.Outbound.Topic(pk.Properties.TopicAlias)
	}
	cl.ops.hooks.OnPublishDropped(cl, pk)
	if pk.FixedHeader.Qos > 0 && cl.State.Inflight.Delete(pk.PacketID) {
		atomic.AddInt64(&cl.ops.info.Inflight, -1)
		cl.State.Inflight.IncreaseSendQuota()
	}
	return true
}
