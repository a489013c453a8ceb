package broker

import (
	"context"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgechat/edgechat/internal/waitnotice"
	"github.com/edgechat/edgechat/internal/wire"
)

// pipeline lets one connection have many durable (QoS 1 chat) publishes
// committing at once while it answers them strictly in the order they
// arrived ([MQTT-4.6.0-2]).
//
// OnPublish validates a QoS 1 chat publish and has the ChatStore check
// it, stamp its ID and hand it to the Raft log (PipelinedChatStore), all
// on the connection's reader goroutine, so that a connection's messages
// get increasing IDs and commit in publish order; then it queues the
// publish here and returns packets.ErrRejectPacket: mochi sends no
// PUBACK, delivers nothing and reads the client's next packet. One
// answerer per busy connection (on a pooled worker) takes the queue in
// order, waits for each commit, delivers the committed message
// (b.inject) and writes the PUBACK itself. A refusal of a QoS 1 publish while the queue is not
// empty is queued too, already answered, so it keeps its place. Any
// other publish (QoS 0 or 2, typing, receipts, heartbeats, open topics)
// and a publish mochi refuses itself (ACL) first waits for the queue to
// drain, then takes the synchronous path, so mochi's own answers never
// overtake ours.
//
// After the connection closed, queued commits still complete and are
// delivered; only their PUBACKs are dropped (the client resends, and the
// (sender, cid) dedupe answers).
type pipeline struct {
	b   *Broker
	cl  *mqtt.Client
	max int // the Receive Maximum the server advertises

	// enqueue bounds startChat's hand-off to the Raft log; used only on
	// the connection's reader goroutine (its timer ends by itself: no
	// stop needed when the connection goes).
	enqueue sharedDeadline

	mu       sync.Mutex
	q        []*pending    // not yet answered, in arrival order
	inflight int           // publishes whose PUBACK is not yet on its way (Receive Maximum)
	running  bool          // an answerer goroutine owns the queue
	idle     chan struct{} // closed when the queue empties, if someone waits
}

// pending is one queued publish: either answered already (ack, write)
// or waiting for its commit (wait, before deadline).
type pending struct {
	ack   *packets.Packet // (a packets.Packet is 800 bytes: only refusals keep one here)
	write bool            // write ack (false: a 3.1.1 refusal, which gets no PUBACK)

	// wait waits for the commit and returns the answer and the committed
	// message's live delivery (nil when there is none).
	wait     func(context.Context) (ack packets.Packet, write bool, deliver func())
	deadline time.Time
}

// sharedDeadline hands the answerer one deadline context for the waits
// of publishes that arrived within deadlineSlack of each other (a timer
// per publish was 2% of a node's CPU at saturation): a wait may end up to
// deadlineSlack before its own deadline, never after.
type sharedDeadline struct {
	base   context.Context
	ctx    context.Context
	cancel context.CancelFunc
	at     time.Time
}

// deadlineSlack is how much earlier than its own deadline a queued
// publish's wait may end.
const deadlineSlack = 100 * time.Millisecond

// until is a context that ends at most deadlineSlack before deadline.
func (d *sharedDeadline) until(deadline time.Time) context.Context {
	if d.ctx == nil || d.ctx.Err() != nil || deadline.Before(d.at) || deadline.Sub(d.at) > deadlineSlack {
		d.stop()
		d.ctx, d.cancel = context.WithDeadline(d.base, deadline)
		d.at = deadline
	}
	return d.ctx
}

func (d *sharedDeadline) stop() {
	if d.cancel != nil {
		d.cancel()
	}
}

func newPipeline(b *Broker, cl *mqtt.Client) *pipeline {
	m := int(b.srv.Options.Capabilities.ReceiveMaximum)
	if m <= 0 {
		m = 65535
	}
	return &pipeline{b: b, cl: cl, max: m, enqueue: sharedDeadline{base: b.baseCtx}}
}

// pipelineOf is the live connection's pipeline, nil for the inline
// client and unknown connections.
func (b *Broker) pipelineOf(cl *mqtt.Client) *pipeline {
	if cl.Net.Inline {
		return nil
	}
	if ci := b.connOf(cl); ci != nil {
		return ci.pipe
	}
	return nil
}

// reserve takes a Receive Maximum slot for a publish about to be
// queued; false when the client has used them all. Only the
// connection's reader (OnPublish) reserves and pushes, so a reserved
// slot stays free until its push.
func (p *pipeline) reserve() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.inflight >= p.max {
		return false
	}
	p.inflight++
	return true
}

// unreserve gives back a slot that was not pushed after all.
func (p *pipeline) unreserve() {
	p.mu.Lock()
	p.inflight--
	p.mu.Unlock()
}

// push queues e, which holds a reserved slot.
func (p *pipeline) push(e *pending) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.q = append(p.q, e)
	if !p.running {
		p.running = true
		p.b.answerers.Go(p.answer)
	}
}

// busy reports whether some publish still waits for its answer.
func (p *pipeline) busy() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.q) > 0
}

// drain waits until every queued publish has been answered. Each entry
// completes within the commit timeout.
func (p *pipeline) drain() {
	p.mu.Lock()
	if len(p.q) == 0 {
		p.mu.Unlock()
		return
	}
	if p.idle == nil {
		p.idle = make(chan struct{})
	}
	ch := p.idle
	p.mu.Unlock()
	<-ch
}

// answererIdle is how long an answerer's worker waits for the next
// busy connection before it goes. An answer run (hooks, PUBACK encoding,
// delivery) needs a deep stack: on a fresh goroutine per run, growing it
// was 3-6% of a node's CPU (docs/perf/cluster.md, 2026-12-04).
const answererIdle = 5 * time.Second

// maxAckBatch bounds the PUBACKs the answerer writes in one go.
const maxAckBatch = 64

// answerBatch is an answerer's batch buffers. A connection's answerer
// runs while its queue is busy and ends when it is empty, so under load
// answerers start all the time: growing a slice of PUBACKs (a
// packets.Packet is 800 bytes) each time was a fifth of a node's
// allocation at saturation.
type answerBatch struct {
	acks     []packets.Packet
	delivers []func()
}

var answerBatches = sync.Pool{New: func() any {
	return &answerBatch{acks: make([]packets.Packet, 0, maxAckBatch), delivers: make([]func(), 0, maxAckBatch)}
}}

// answer acknowledges and delivers queued publishes in order until the
// queue is empty. The PUBACKs of publishes whose commits are already
// there when it gets to them go out together, in one write: it writes
// what it has batched as soon as a commit is not there yet (the wait's
// waitnotice), when the queue runs out, and every maxAckBatch answers,
// so batching never holds a PUBACK back while it waits. The batch's
// live deliveries run after its PUBACKs are written, in publish order:
// a PUBACK means committed, and a big group's fan-out (milliseconds)
// must not hold it back. Answered entries leave the queue only when
// their PUBACKs are written and their deliveries done, so that busy and
// drain (the synchronous path's turn) still see them.
func (p *pipeline) answer() {
	batch := answerBatches.Get().(*answerBatch)
	acks, delivers := batch.acks[:0], batch.delivers[:0]
	defer func() {
		// Cleared by flush; kept only when not grown past a batch.
		if cap(acks) <= maxAckBatch {
			batch.acks, batch.delivers = acks[:0], delivers[:0]
			answerBatches.Put(batch)
		}
	}()
	next := 0 // p.q[:next] are answered, their PUBACKs not yet written
	flush := func() {
		if next == 0 {
			return
		}
		// Count the slots free before the PUBACKs leave: the client may
		// send its next publish as soon as it reads one.
		p.mu.Lock()
		p.inflight -= next
		p.mu.Unlock()
		if len(acks) > 0 && !p.cl.Closed() {
			if err := p.cl.WritePackets(acks); err != nil {
				p.b.log.Debug("write pubacks", "client", p.cl.ID, "count", len(acks), "error", err)
			} else {
				p.b.m.pubackWrites.Inc()
				p.b.m.pubacks.Add(float64(len(acks)))
			}
		}
		clear(acks)
		acks = acks[:0]
		for i, deliver := range delivers {
			deliver()
			delivers[i] = nil
		}
		delivers = delivers[:0]
		// Only now: a publish that waits for its turn (drain) is
		// delivered after these.
		p.mu.Lock()
		clear(p.q[:next])
		p.q = p.q[next:]
		p.mu.Unlock()
		next = 0
	}
	base := waitnotice.With(p.b.baseCtx, flush)
	waits := sharedDeadline{base: base}
	defer waits.stop()
	for {
		p.mu.Lock()
		if len(p.q) == next {
			if next > 0 {
				p.mu.Unlock()
				flush()
				continue
			}
			p.running = false
			p.q = nil
			if p.idle != nil {
				close(p.idle)
				p.idle = nil
			}
			p.mu.Unlock()
			return
		}
		e := p.q[next]
		p.mu.Unlock()
		var ack packets.Packet
		write := e.write
		if e.ack != nil {
			ack = *e.ack
		}
		if e.wait != nil {
			var deliver func()
			ack, write, deliver = e.wait(waits.until(e.deadline)) // may flush (next = 0): e is then p.q[0]
			if deliver != nil {
				delivers = append(delivers, deliver)
			}
		}
		next++
		if write {
			acks = append(acks, ack)
		}
		if next >= maxAckBatch {
			flush()
		}
	}
}

// overflow disconnects a client that sent more QoS 1 publishes than the
// Receive Maximum allows, as mochi does for its own quota.
func (b *Broker) overflow(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	b.m.refused.WithLabelValues("receive_maximum").Inc()
	_ = b.srv.DisconnectClient(cl, packets.ErrReceiveMaximum) // ~[MQTT-3.3.4-7] ~[MQTT-3.3.4-8]
	return pk, packets.ErrRejectPacket
}

// pipelined reports whether a publish goes through the connection's
// pipeline: QoS 1 on a durable chat topic.
func pipelined(pk packets.Packet) bool {
	if pk.FixedHeader.Qos != 1 {
		return false
	}
	k := wire.ParseTopic(pk.TopicName).Kind
	return k == wire.KindDirect || k == wire.KindGroup
}

// buildAck mirrors mochi's Server.buildAck for a QoS 1 PUBACK to the
// publish with packet ID id: user properties (the publish's, inherited
// unless the server disabled that, or the ones given) and, for a failure
// code, its reason string. OnPacketEncode still turns a success reason
// into 0x00. (A PUBACK carries no other property of the publish.)
func (b *Broker) buildAck(id uint16, user []packets.UserProperty, reason packets.Code) packets.Packet {
	ack := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Puback},
		PacketID:    id,
		ReasonCode:  reason.Code,
		Created:     time.Now().Unix(),
	}
	if !b.srv.Options.Capabilities.Compatibilities.NoInheritedPropertiesOnAck {
		ack.Properties.User = user
	}
	if reason.Code >= packets.ErrUnspecifiedError.Code {
		ack.Properties.ReasonString = reason.Reason
	}
	return ack
}

// refusalAck is the answer refuse would have mochi give to a QoS 1
// publish (packet ID id, user properties inherited): a PUBACK with the
// code for v5, nothing for 3.1.1.
func (b *Broker) refusalAck(cl *mqtt.Client, id uint16, inherited []packets.UserProperty, class, reason string, code packets.Code) (packets.Packet, bool) {
	b.m.dropped.WithLabelValues(class, reason).Inc()
	if cl.Properties.ProtocolVersion != 5 {
		return packets.Packet{}, false
	}
	return b.buildAck(id, inherited, code), true
}
