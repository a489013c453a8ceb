package broker

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgechat/edgechat/broker/routes"
	"github.com/edgechat/edgechat/cluster"
	"github.com/edgechat/edgechat/internal/peerqueue"
	"github.com/edgechat/edgechat/internal/wire"
)

// Forwarding between nodes. Every publish delivered on this node (client
// publishes after OnPublish, committed chat messages, server publishes)
// is sent once to each OTHER member with a matching route; a retained
// publish goes to every other member, so that retained state (presence)
// ends the same everywhere. Each destination has one queue and one
// sender goroutine, so publishes reach a node in the order they were
// delivered here (per-sender order across nodes). The queues are a
// peerqueue.Set: a batch is retried with backoff until acknowledged,
// while the destination is a member; when it is no longer one its queue
// is dropped (counted as not_member). Batches carry (epoch, seq) so that
// the receiver (peerqueue.Dedup) skips what a retry resends after a lost
// acknowledgement. The receiver injects the packets with its own inline
// client and never forwards them again. The member list is reloaded when
// the cluster announces a change, not polled.

// RPCService is the name of the broker's RPC service; its method
// "Broker.Deliver" receives forwarded publishes.
const (
	RPCService    = "Broker"
	deliverMethod = RPCService + ".Deliver"
)

// Reply codes of Broker.Deliver.
const (
	deliverClosed = "closed" // the receiver is shutting down: retry (elsewhere it is gone soon)
	deliverBad    = "bad"    // a malformed request: not retried
)

// ForwardPacket is one forwarded publish. Exported for gob.
type ForwardPacket struct {
	Topic           string
	Payload         []byte
	QoS             byte
	Retain          bool
	Props           []wire.Prop
	ContentType     string
	ResponseTopic   string
	CorrelationData []byte
	PayloadFormat   byte
	HasFormat       bool
	// MessageExpiry is what is left of the publish's MQTT 5 Message
	// Expiry Interval when its batch is sent, in seconds (at least 1);
	// 0: it never expires. A node of an earlier version ignores it.
	MessageExpiry uint32

	// expiresAt is when the publish expires, in Unix seconds on this
	// node's clock (0: never); send turns it into MessageExpiry, so that
	// the time a batch waited in the queue counts. Not sent.
	expiresAt int64
}

// ForwardArgs is a batch from one node's queue for the receiver: packets
// Seq, Seq+1, ... of the sender's queue epoch Epoch.
type ForwardArgs struct {
	From    string
	Epoch   uint64
	Seq     uint64
	Packets []ForwardPacket
}

// ForwardReply acknowledges a batch; Code is "" on success.
type ForwardReply struct {
	Code      string
	Delivered int // packets injected (not counting duplicates)
	// AppliesChat: the receiver delivers committed chat messages from
	// its own apply (committed.go), so they are not forwarded to it. A
	// node of an earlier version leaves it false.
	AppliesChat bool
}

// forwardRPC is the RPC service "Forward".
type forwardRPC struct{ f *forwarder }

// Deliver injects a batch of forwarded publishes.
func (s *forwardRPC) Deliver(a *ForwardArgs, r *ForwardReply) error {
	s.f.receive(a, r)
	return nil
}

type forwarder struct {
	b       *Broker
	cluster Cluster
	self    string
	table   *routes.Table
	peerIn  *mqtt.Client // inline client that injects forwarded publishes

	members atomic.Pointer[map[string]cluster.Member]
	kick    chan struct{} // refresh the member list now

	q     *peerqueue.Set[ForwardPacket] // send side: one queue per destination node
	dedup peerqueue.Dedup               // receive side: per sending node

	// applies holds, per node, whether its last answer said it delivers
	// committed chat messages itself (ForwardReply.AppliesChat); a node
	// not heard from yet gets them forwarded (and drops them if it does).
	applies sync.Map // node name → bool
}

func newForwarder(b *Broker, c Cluster, table *routes.Table) *forwarder {
	f := &forwarder{b: b, cluster: c, self: c.Self(), table: table, kick: make(chan struct{}, 1)}
	f.q = peerqueue.NewSet(f.send, peerqueue.Config[ForwardPacket]{
		MaxItems:   b.cfg.ForwardQueue,
		MaxBatch:   b.cfg.ForwardBatch,
		Timeout:    b.cfg.ForwardTimeout,
		BackoffMin: 20 * time.Millisecond,
		BackoffMax: b.cfg.ForwardRetryMax,
		Metrics:    b.m.fwd,
		Logger:     b.log,
	})
	f.peerIn = b.srv.NewClient(nil, mqtt.LocalListener, "edgechat-peer", true)
	f.peerIn.Properties.ProtocolVersion = 5
	empty := map[string]cluster.Member{}
	f.members.Store(&empty)
	f.refreshMembers()
	table.OnChange(func(node, _ string) {
		if node != "" && node != f.self {
			if _, ok := (*f.members.Load())[node]; !ok {
				f.kickRefresh() // a route of a node we do not know yet: a new member
			}
		}
	})
	return f
}

func (f *forwarder) kickRefresh() {
	select {
	case f.kick <- struct{}{}:
	default:
	}
}

// refreshMembers reloads the member list and drops the queues of nodes
// that are no longer members.
func (f *forwarder) refreshMembers() {
	ms := f.cluster.Members()
	m := make(map[string]cluster.Member, len(ms))
	for _, x := range ms {
		m[x.Name] = x
	}
	f.members.Store(&m)
	gone := f.q.Retain(func(node string) bool { _, ok := m[node]; return ok }, dropNotMember)
	for node, n := range gone {
		f.b.log.Info("forward queue dropped: node is no longer a member", "node", node, "packets", n)
	}
}

// dropNotMember is the drop reason of publishes for a node that left.
const dropNotMember = "not_member"

// runMembers refreshes the member list when the cluster announces a
// change (or a sender kicks it), until ctx ends; then it stops the
// queues. It does not poll: an idle cluster stays idle.
func (f *forwarder) runMembers(ctx context.Context) {
	defer f.q.Close()
	for {
		changed := f.cluster.MembersChanged() // before reading: no change is missed
		f.refreshMembers()
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-f.kick:
		}
	}
}

// forward sends a publish delivered here to the other nodes that want it.
// It runs on the publisher's goroutine (OnPublished), which keeps each
// publisher's order in every destination queue.
func (f *forwarder) forward(pk packets.Packet) {
	members := *f.members.Load()
	var dests []string
	if pk.FixedHeader.Retain {
		for name := range members {
			if name != f.self {
				dests = append(dests, name)
			}
		}
	} else {
		if !f.table.OtherNodes(f.self) {
			return // no other node wants anything (a single node): skip the topic lookup
		}
		dests = f.table.Match(pk.TopicName)
	}
	if len(dests) == 0 {
		return
	}
	var fp *ForwardPacket
	for _, node := range dests {
		if node == f.self {
			continue
		}
		if _, ok := members[node]; !ok {
			f.b.m.fwd.Dropped(node, dropNotMember, 1)
			continue
		}
		if fp == nil {
			p := toForward(pk)
			fp = &p
		}
		// A full or closed queue counts the drop itself.
		_ = f.q.Push(node, *fp)
	}
}

// forwardOlder sends a committed chat message sent on this node to the
// other nodes that want it and do not deliver committed messages from
// their own apply (an earlier version, during a rolling upgrade). It runs
// on the publisher's goroutine, which keeps its order.
func (f *forwarder) forwardOlder(topic string, payload []byte, qos byte, props []packets.UserProperty) {
	if !f.table.OtherNodes(f.self) {
		return
	}
	members := *f.members.Load()
	var fp *ForwardPacket
	for _, node := range f.table.Match(topic) {
		if node == f.self {
			continue
		}
		if v, ok := f.applies.Load(node); ok && v.(bool) {
			continue
		}
		if _, ok := members[node]; !ok {
			f.b.m.fwd.Dropped(node, dropNotMember, 1)
			continue
		}
		if fp == nil {
			p := toForward(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos}, TopicName: topic,
				Payload: payload, Properties: packets.Properties{User: props}})
			fp = &p
		}
		_ = f.q.Push(node, *fp)
	}
}

func toForward(pk packets.Packet) ForwardPacket {
	fp := ForwardPacket{
		Topic:           pk.TopicName,
		Payload:         bytes.Clone(pk.Payload),
		QoS:             pk.FixedHeader.Qos,
		Retain:          pk.FixedHeader.Retain,
		ContentType:     pk.Properties.ContentType,
		ResponseTopic:   pk.Properties.ResponseTopic,
		CorrelationData: bytes.Clone(pk.Properties.CorrelationData),
		PayloadFormat:   pk.Properties.PayloadFormat,
		HasFormat:       pk.Properties.PayloadFormatFlag,
	}
	if pk.Expiry > 0 {
		fp.expiresAt = pk.Expiry // set by mochi from the Message Expiry Interval
	}
	if len(pk.Properties.User) > 0 {
		fp.Props = make([]wire.Prop, len(pk.Properties.User))
		for i, u := range pk.Properties.User {
			fp.Props[i] = wire.Prop{Key: u.Key, Value: u.Val}
		}
	}
	return fp
}

// withExpiryLeft sets the MessageExpiry of the packets that expire to
// what is left of it at now (at least 1 s: one that expired while queued
// lives a second on the receiver), on a copy of items when any does.
func withExpiryLeft(items []ForwardPacket, now int64) []ForwardPacket {
	var out []ForwardPacket
	for i, p := range items {
		if p.expiresAt == 0 {
			continue
		}
		if out == nil {
			out = slices.Clone(items)
		}
		out[i].MessageExpiry = uint32(max(1, p.expiresAt-now))
	}
	if out == nil {
		return items
	}
	return out
}

// send is the queues' Sender: one Broker.Deliver call for a batch.
func (f *forwarder) send(ctx context.Context, b peerqueue.Batch[ForwardPacket]) error {
	m, ok := (*f.members.Load())[b.Peer]
	if !ok {
		f.kickRefresh()
		return fmt.Errorf("broker: %s is not a known member", b.Peer)
	}
	args := ForwardArgs{From: f.self, Epoch: b.Epoch, Seq: b.Seq, Packets: withExpiryLeft(b.Items, time.Now().Unix())}
	var reply ForwardReply
	if err := f.cluster.Call(ctx, m.Addr, deliverMethod, &args, &reply); err != nil {
		return fmt.Errorf("broker: forward to %s: %w", b.Peer, err)
	}
	f.applies.Store(b.Peer, reply.AppliesChat)
	switch reply.Code {
	case "":
		return nil
	case deliverBad:
		// Retrying cannot help: the queue gives the batch up (refused).
		return peerqueue.Permanent(fmt.Errorf("broker: %s refused the batch", b.Peer))
	}
	return fmt.Errorf("broker: %s answered %q", b.Peer, reply.Code)
}

// queued is the number of packets waiting for node (tests, admin).
func (f *forwarder) queued(node string) (int, bool) { return f.q.Len(node) }

// wait waits for the sender goroutines after runMembers closed the queues.
func (f *forwarder) wait() {
	f.q.Close() // in case Run never started runMembers
	f.q.Wait()
}

// --- receive side ---

func (f *forwarder) receive(a *ForwardArgs, r *ForwardReply) {
	if a.From == "" || a.From == f.self || a.Epoch == 0 || routes.ValidNode(a.From) != nil {
		r.Code = deliverBad
		return
	}
	if f.b.closed.Load() {
		r.Code = deliverClosed
		return
	}
	applies := f.b.deliversCommitted()
	r.AppliesChat = applies
	// One batch of a source at a time: a retry racing the original (whose
	// reply was lost) waits, then finds its packets already delivered.
	f.dedup.Accept(a.From, a.Epoch, a.Seq, len(a.Packets), func(skip int) {
		f.b.m.fwdDuplicates.Add(float64(skip))
		for _, p := range a.Packets[skip:] {
			// Counted on arrival, before delivery, so the counter never trails
			// what a subscriber has already seen (refusals also count below).
			f.b.m.fwdReceived.Inc()
			if applies && committedChat(p.Topic) {
				continue // a node of an earlier version sent it: this node delivers it from its apply
			}
			if err := f.inject(p); err != nil {
				f.b.m.fwd.Dropped(a.From, "invalid", 1)
				f.b.log.Warn("forwarded publish refused", "from", a.From, "topic", p.Topic, "error", err)
				continue
			}
			r.Delivered++
		}
	})
}

// committedChat reports whether topic carries committed chat messages
// only (a user's or a group's newMessage: clients' publishes there go
// through the archive, in every mode).
func committedChat(topic string) bool {
	k := wire.ParseTopic(topic).Kind
	return k == wire.KindDirect || k == wire.KindGroup
}

func (f *forwarder) inject(p ForwardPacket) error {
	if p.Retain {
		f.b.retainMu.Lock() // see RestoreRetained
		defer f.b.retainMu.Unlock()
	}
	return f.injectLocked(p)
}

// injectLocked is inject with retainMu held for a retained publish.
func (f *forwarder) injectLocked(p ForwardPacket) error {
	if p.Topic == "" || strings.ContainsAny(p.Topic, "+#") || strings.HasPrefix(p.Topic, "$") || p.QoS > 2 ||
		len(p.Payload) > f.b.cfg.MaxPacketSize {
		return fmt.Errorf("%w: topic %q qos %d, %d bytes", ErrInvalidTopic, p.Topic, p.QoS, len(p.Payload))
	}
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: p.QoS, Retain: p.Retain},
		TopicName:   p.Topic,
		Payload:     p.Payload,
		Properties: packets.Properties{
			ContentType:       p.ContentType,
			ResponseTopic:     p.ResponseTopic,
			CorrelationData:   p.CorrelationData,
			PayloadFormat:     p.PayloadFormat,
			PayloadFormatFlag: p.HasFormat,
			// mochi sets the expiry from it (processPublish), and gives the
			// subscribers what is left
			MessageExpiryInterval: p.MessageExpiry,
			User:                  userProps(p.Props),
		},
	}
	if p.QoS > 0 {
		pk.PacketID = uint16(p.QoS) // see injectAs in broker.go
	}
	if err := f.b.srv.InjectPacket(f.peerIn, pk); err != nil {
		return fmt.Errorf("broker: inject forwarded %s: %w", p.Topic, err)
	}
	return nil
}
