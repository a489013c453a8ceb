// SPDX-License-Identifier: MIT
// SPDX-FileCopyrightText: 2023 mochi-mqtt, mochi-co
// SPDX-FileContributor: mochi-co

package mqtt

import (
	"sort"
	"sync"
	"sync/atomic"

	"github.com/mochi-mqtt/server/v2/packets"
)

// Inflight is a map of InflightMessage keyed on packet id.
//
// The client and the server number their packets independently (MQTT 5
// 2.2.1), so the map holds two spaces: the exchanges the server started
// (a PUBLISH it sent, then the PUBREL of a QoS 2 one), keyed by the
// server's identifiers, and those the client started (the PUBACK,
// PUBREC or PUBCOMP the server answered a client's publish with), keyed
// by the client's. Set files a packet by its type; Get and Delete look
// up the server's identifiers, GetInbound and DeleteInbound the
// client's. One map keyed by the bare identifier let a client's QoS 1
// publish delete the server's unacknowledged delivery of the same
// number: the delivery was never resent, and the client's PUBACK for it
// then found nothing, so its send quota was lost for good.
type Inflight struct {
	sync.RWMutex
	internal            map[inflightKey]packets.Packet // internal contains the inflight packets
	order               map[inflightKey]uint64         // when each was first set (seq), for GetAll's order
	seq                 uint64                         // the last order given
	receiveQuota        int32                          // remaining inbound qos quota for flow control
	sendQuota           int32                          // remaining outbound qos quota for flow control
	maximumReceiveQuota int32                          // maximum allowed receive quota
	maximumSendQuota    int32                          // maximum allowed send quota
	held                int32                          // how many are held back by the send quota (Expiry < 0); changed under the lock
}

// NewInflights returns a new instance of an Inflight packets map.
func NewInflights() *Inflight {
	return &Inflight{} // the map is made on first Set: most clients never have inflight messages
}

// inflightKey is a packet identifier and the side that chose it.
type inflightKey uint32

// clientChosen marks the identifiers of exchanges the client started.
const clientChosen inflightKey = 1 << 16

// keyOf files m in its space: the acknowledgements the server sends of
// a client's publishes are in the client's, everything else (the
// server's PUBLISH and PUBREL) in the server's.
func keyOf(m packets.Packet) inflightKey {
	switch m.FixedHeader.Type {
	case packets.Puback, packets.Pubrec, packets.Pubcomp:
		return clientChosen | inflightKey(m.PacketID)
	}
	return inflightKey(m.PacketID)
}

// Set adds or updates an inflight packet by packet id, in the space of
// whoever started its exchange (see Inflight).
func (i *Inflight) Set(m packets.Packet) bool {
	i.Lock()
	defer i.Unlock()

	k := keyOf(m)
	old, ok := i.internal[k]
	if ok && old.Expiry < 0 {
		atomic.AddInt32(&i.held, -1)
	}
	if m.Expiry < 0 {
		atomic.AddInt32(&i.held, 1)
	}
	if i.internal == nil {
		i.internal = map[inflightKey]packets.Packet{}
		i.order = map[inflightKey]uint64{}
	}
	i.internal[k] = m
	if !ok {
		// A replaced packet (a PUBLISH become a PUBREL, a held-back one
		// set again) keeps its place.
		i.seq++
		i.order[k] = i.seq
	}
	return !ok
}

// Get returns the inflight packet of an exchange the server started
// with packet id id.
func (i *Inflight) Get(id uint16) (packets.Packet, bool) {
	return i.get(inflightKey(id))
}

// GetInbound returns the inflight packet of an exchange the client
// started with packet id id (the server's PUBREC of its QoS 2 publish).
func (i *Inflight) GetInbound(id uint16) (packets.Packet, bool) {
	return i.get(clientChosen | inflightKey(id))
}

func (i *Inflight) get(k inflightKey) (packets.Packet, bool) {
	i.RLock()
	defer i.RUnlock()

	if m, ok := i.internal[k]; ok {
		return m, true
	}

	return packets.Packet{}, false
}

// Len returns the size of the inflight messages map.
func (i *Inflight) Len() int {
	i.RLock()
	defer i.RUnlock()
	return len(i.internal)
}

// Clone returns a new instance of Inflight with the same message data.
// This is used when transferring inflights from a taken-over session.
func (i *Inflight) Clone() *Inflight {
	c := NewInflights()
	i.RLock()
	defer i.RUnlock()
	for k, v := range i.internal {
		if c.internal == nil {
			c.internal = map[inflightKey]packets.Packet{}
			c.order = map[inflightKey]uint64{}
		}
		c.internal[k] = v
		c.order[k] = i.order[k]
	}
	c.seq = i.seq
	c.held = atomic.LoadInt32(&i.held)
	return c
}

// forgetTopicAliases takes the outbound topic aliases off the stored
// PUBLISH packets, which name their topics (storeInflight): an alias lasts
// only for the network connection it was sent on [MQTT-3.3.2-7], and a
// session's inflight messages go out again on its next connection, where
// the client knows none of them or allows none [MQTT-3.3.2-9].
func (i *Inflight) forgetTopicAliases() {
	i.Lock()
	defer i.Unlock()
	for k, v := range i.internal {
		if v.Properties.TopicAlias != 0 || v.Properties.TopicAliasFlag {
			v.Properties.TopicAlias, v.Properties.TopicAliasFlag = 0, false
			i.internal[k] = v
		}
	}
}

// GetAll returns all the inflight messages.
func (i *Inflight) GetAll(immediate bool) []packets.Packet {
	i.RLock()
	defer i.RUnlock()

	m := []packets.Packet{}
	for _, v := range i.internal {
		if !immediate || (immediate && v.Expiry < 0) {
			m = append(m, v)
		}
	}

	// In the order they were sent ([MQTT-4.6.0-1]: resent in that order).
	// Sorting by the second each was created (cut to 16 bits) left those
	// of one second in the map's random order.
	sort.Slice(m, func(a, b int) bool {
		return i.order[keyOf(m[a])] < i.order[keyOf(m[b])]
	})

	return m
}

// NextImmediate returns the next inflight packet which is indicated to be sent immediately.
// This typically occurs when the quota has been exhausted, and we need to wait until new quota
// is free to continue sending.
func (i *Inflight) NextImmediate() (packets.Packet, bool) {
	// No lock here: GetAll takes the read lock, and taking it twice
	// deadlocks when a writer queues in between.
	m := i.GetAll(true)
	if len(m) > 0 {
		return m[0], true
	}

	return packets.Packet{}, false
}

// Held returns how many inflight messages are held back by the send
// quota, waiting for an acknowledgement to free it.
func (i *Inflight) Held() int32 {
	return atomic.LoadInt32(&i.held)
}

// ReleaseHeld takes the oldest message held back by the send quota out
// of the held ones (its Expiry set to 0) and returns it, for its caller
// to send. Under the lock, so that one held message is released once
// however many goroutines free quota at the same time.
func (i *Inflight) ReleaseHeld() (packets.Packet, bool) {
	i.Lock()
	defer i.Unlock()
	if atomic.LoadInt32(&i.held) == 0 {
		return packets.Packet{}, false
	}
	var oldest inflightKey
	found := false
	for k, v := range i.internal {
		if v.Expiry < 0 && (!found || i.order[k] < i.order[oldest]) {
			oldest, found = k, true
		}
	}
	if !found {
		return packets.Packet{}, false
	}
	m := i.internal[oldest]
	m.Expiry = 0
	// Released to be written for the first time: sent again later, it is
	// a re-delivery (edgechat patch 46).
	sent := m
	sent.FixedHeader.Dup = m.FixedHeader.Type == packets.Publish
	i.internal[oldest] = sent
	atomic.AddInt32(&i.held, -1)
	return m, true
}

// markSent sets the DUP flag of the stored PUBLISH of exchange k, which
// has just been written (edgechat patch 46): sent again, it is a
// re-delivery [MQTT-3.3.1-1]. Its place in the order stays.
func (i *Inflight) markSent(k inflightKey) {
	i.Lock()
	defer i.Unlock()
	if m, ok := i.internal[k]; ok && m.FixedHeader.Type == packets.Publish {
		m.FixedHeader.Dup = true
		i.internal[k] = m
	}
}

// Delete removes the in-flight message of an exchange the server
// started with packet id id. Returns true if the message existed.
func (i *Inflight) Delete(id uint16) bool {
	return i.delete(inflightKey(id))
}

// DeleteInbound removes the in-flight message of an exchange the client
// started with packet id id. Returns true if the message existed.
func (i *Inflight) DeleteInbound(id uint16) bool {
	return i.delete(clientChosen | inflightKey(id))
}

// DeletePacket removes m, a packet GetAll returned, from its space.
func (i *Inflight) DeletePacket(m packets.Packet) bool {
	return i.delete(keyOf(m))
}

func (i *Inflight) delete(k inflightKey) bool {
	i.Lock()
	defer i.Unlock()

	m, ok := i.internal[k]
	if ok && m.Expiry < 0 {
		atomic.AddInt32(&i.held, -1)
	}
	delete(i.internal, k)
	delete(i.order, k)

	return ok
}

// TakeRecieveQuota reduces the receive quota by 1.
func (i *Inflight) DecreaseReceiveQuota() {
	if atomic.LoadInt32(&i.receiveQuota) > 0 {
		atomic.AddInt32(&i.receiveQuota, -1)
	}
}

// TakeRecieveQuota increases the receive quota by 1.
func (i *Inflight) IncreaseReceiveQuota() {
	if atomic.LoadInt32(&i.receiveQuota) < atomic.LoadInt32(&i.maximumReceiveQuota) {
		atomic.AddInt32(&i.receiveQuota, 1)
	}
}

// ResetReceiveQuota resets the receive quota to the maximum allowed value.
func (i *Inflight) ResetReceiveQuota(n int32) {
	atomic.StoreInt32(&i.receiveQuota, n)
	atomic.StoreInt32(&i.maximumReceiveQuota, n)
}

// DecreaseSendQuota reduces the send quota by 1.
func (i *Inflight) DecreaseSendQuota() {
	i.TakeSendQuota()
}

// TakeSendQuota reduces the send quota by 1 if it is above 0, and
// reports whether it was. One step: concurrent deliveries to one client
// that each read the quota and then took it could both take the last.
func (i *Inflight) TakeSendQuota() bool {
	for {
		q := atomic.LoadInt32(&i.sendQuota)
		if q <= 0 {
			return false
		}
		if atomic.CompareAndSwapInt32(&i.sendQuota, q, q-1) {
			return true
		}
	}
}

// IncreaseSendQuota increases the send quota by 1, up to its maximum.
func (i *Inflight) IncreaseSendQuota() {
	for {
		q := atomic.LoadInt32(&i.sendQuota)
		if q >= atomic.LoadInt32(&i.maximumSendQuota) {
			return
		}
		if atomic.CompareAndSwapInt32(&i.sendQuota, q, q+1) {
			return
		}
	}
}

// RecountSendQuota sets the send quota to its maximum less the
// server's exchanges in flight that were sent (not held back), at the
// end of a handshake: the taken-over session's unacknowledged
// deliveries are resent there and count against the client's Receive
// Maximum as before.
func (i *Inflight) RecountSendQuota() {
	i.RLock()
	sent := int32(0)
	for k, v := range i.internal {
		if k&clientChosen == 0 && v.Expiry >= 0 {
			sent++
		}
	}
	i.RUnlock()
	atomic.StoreInt32(&i.sendQuota, max(atomic.LoadInt32(&i.maximumSendQuota)-sent, 0))
}

// ResetSendQuota resets the send quota to the maximum allowed value.
func (i *Inflight) ResetSendQuota(n int32) {
	atomic.StoreInt32(&i.sendQuota, n)
	atomic.StoreInt32(&i.maximumSendQuota, n)
}
