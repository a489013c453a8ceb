package broker

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"github.com/edgechat/edgechat/cluster"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgechat/edgechat/broker/routes"
	"github.com/edgechat/edgechat/internal/wire"
)

// Forwarding between nodes. Every publish delivered on this node (client
// publishes after OnPublish, committed chat messages, server publishes)
// is sent once to each OTHER member with a matching route; a retained
// publish goes to every other member, so that retained state (presence)
// ends the same everywhere. Each destination has one queue and one
// sender goroutine, so publishes reach a node in the order they were
// delivered here (per-sender order across nodes). A batch is retried
// with backoff until acknowledged, while the destination is a member;
// when it is no longer one its queue is dropped (counted). Batches carry
// (epoch, seq) so that the receiver skips what a retry resends after a
// lost acknowledgement. The receiver injects the packets with its own
// inline client and never forwards them again.

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

// ForwardPacket is one forwarded publish. Exported for net/rpc's gob.
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
}

// forwardRPC is the RPC service; only Deliver is exported (net/rpc).
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

	mu     sync.Mutex
	queues map[string]*peerQueue
	wg     sync.WaitGroup
	ctx    context.Context

	rmu  sync.Mutex
	srcs map[string]*source // receive side: dedupe state per sending node
}

// source is what the receiver remembers of one sending node's queue.
type source struct {
	mu    sync.Mutex
	epoch uint64
	next  uint64
}

type peerQueue struct {
	node  string
	epoch uint64

	mu      sync.Mutex
	items   []ForwardPacket // items[head:] are pending
	head    int
	seq     uint64 // seq of items[head]
	dropped bool
	wake    chan struct{}
	done    chan struct{}
}

func newForwarder(b *Broker, c Cluster, table *routes.Table) *forwarder {
	f := &forwarder{b: b, cluster: c, self: c.Self(), table: table, queues: map[string]*peerQueue{},
		srcs: map[string]*source{}, kick: make(chan struct{}, 1), ctx: b.baseCtx}
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
	f.mu.Lock()
	var gone []*peerQueue
	for name, q := range f.queues {
		if _, ok := m[name]; !ok {
			gone = append(gone, q)
			delete(f.queues, name)
		}
	}
	f.mu.Unlock()
	for _, q := range gone {
		q.mu.Lock()
		n := len(q.items) - q.head
		q.dropped = true
		q.items = nil
		q.mu.Unlock()
		close(q.done)
		f.b.m.fwdDropped.WithLabelValues("not_member").Add(float64(n))
		f.b.log.Info("forward queue dropped: node is no longer a member", "node", q.node, "packets", n)
	}
}

// runMembers refreshes the member list every interval (and when kicked).
func (f *forwarder) runMembers(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-f.kick:
		}
		f.refreshMembers()
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
			f.b.m.fwdDropped.WithLabelValues("not_member").Inc()
			continue
		}
		if fp == nil {
			p := toForward(pk)
			fp = &p
		}
		f.enqueue(node, *fp)
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
	if len(pk.Properties.User) > 0 {
		fp.Props = make([]wire.Prop, len(pk.Properties.User))
		for i, u := range pk.Properties.User {
			fp.Props[i] = wire.Prop{Key: u.Key, Value: u.Val}
		}
	}
	return fp
}

func (f *forwarder) enqueue(node string, fp ForwardPacket) {
	f.mu.Lock()
	q := f.queues[node]
	if q == nil {
		if f.ctx.Err() != nil {
			f.mu.Unlock()
			return
		}
		q = &peerQueue{node: node, epoch: randomEpoch(), wake: make(chan struct{}, 1), done: make(chan struct{})}
		f.queues[node] = q
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			f.send(q)
		}()
	}
	f.mu.Unlock()
	q.mu.Lock()
	if q.dropped {
		q.mu.Unlock()
		f.b.m.fwdDropped.WithLabelValues("not_member").Inc()
		return
	}
	if len(q.items)-q.head >= f.b.cfg.ForwardQueue {
		q.mu.Unlock()
		f.b.m.fwdDropped.WithLabelValues("queue_full").Inc()
		return
	}
	q.items = append(q.items, fp)
	q.mu.Unlock()
	f.b.m.fwdQueued.Inc()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func randomEpoch() uint64 {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return binary.BigEndian.Uint64(b[:]) | 1 // never 0: 0 is "no state" on the receiver
}

// send is the queue's single sender: it sends the oldest pending packets
// (up to ForwardBatch) and waits for the acknowledgement before the next
// batch, retrying with backoff.
func (f *forwarder) send(q *peerQueue) {
	for {
		q.mu.Lock()
		for len(q.items) == q.head && !q.dropped {
			q.mu.Unlock()
			select {
			case <-q.wake:
			case <-q.done:
			case <-f.ctx.Done():
				return
			}
			q.mu.Lock()
		}
		if q.dropped {
			q.mu.Unlock()
			return
		}
		n := min(len(q.items)-q.head, f.b.cfg.ForwardBatch)
		args := ForwardArgs{From: f.self, Epoch: q.epoch, Seq: q.seq, Packets: append([]ForwardPacket(nil), q.items[q.head:q.head+n]...)}
		q.mu.Unlock()

		if !f.deliver(q, &args) {
			return // dropped or shutting down
		}

		q.mu.Lock()
		if !q.dropped {
			for i := q.head; i < q.head+n; i++ {
				q.items[i] = ForwardPacket{} // let the payloads go
			}
			q.head += n
			q.seq += uint64(n)
			if q.head == len(q.items) {
				q.items, q.head = q.items[:0], 0
			} else if q.head > 1024 && q.head > len(q.items)/2 {
				q.items = append(q.items[:0:0], q.items[q.head:]...)
				q.head = 0
			}
		}
		q.mu.Unlock()
		f.b.m.fwdSent.Add(float64(n))
		f.b.m.fwdBatches.Inc()
	}
}

// deliver sends one batch until it is acknowledged; false when the queue
// was dropped or the broker is shutting down first.
func (f *forwarder) deliver(q *peerQueue, args *ForwardArgs) bool {
	backoff := 20 * time.Millisecond
	for {
		err := f.call(q.node, args)
		if err == nil {
			return true
		}
		f.b.m.fwdRetries.Inc()
		f.b.log.Debug("forward failed; retrying", "node", q.node, "packets", len(args.Packets), "in", backoff, "error", err)
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-q.done:
			t.Stop()
			return false
		case <-f.ctx.Done():
			t.Stop()
			return false
		}
		backoff = min(2*backoff, f.b.cfg.ForwardRetryMax)
	}
}

func (f *forwarder) call(node string, args *ForwardArgs) error {
	m, ok := (*f.members.Load())[node]
	if !ok {
		f.kickRefresh()
		return fmt.Errorf("broker: %s is not a known member", node)
	}
	ctx, cancel := context.WithTimeout(f.ctx, f.b.cfg.ForwardTimeout)
	defer cancel()
	var reply ForwardReply
	if err := f.cluster.Call(ctx, m.Addr, deliverMethod, args, &reply); err != nil {
		return err
	}
	switch reply.Code {
	case "":
		return nil
	case deliverBad:
		// Retrying cannot help; count the batch as dropped.
		f.b.m.fwdDropped.WithLabelValues("refused").Add(float64(len(args.Packets)))
		f.b.log.Warn("forward refused by peer", "node", node, "packets", len(args.Packets))
		return nil
	}
	return fmt.Errorf("broker: %s answered %q", node, reply.Code)
}

// queued is the number of packets waiting for node (tests, admin).
func (f *forwarder) queued(node string) (int, bool) {
	f.mu.Lock()
	q := f.queues[node]
	f.mu.Unlock()
	if q == nil {
		return 0, false
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.items) - q.head, true
}

// wait waits for the sender goroutines after the broker's context ended.
func (f *forwarder) wait() { f.wg.Wait() }

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
	f.rmu.Lock()
	src := f.srcs[a.From]
	if src == nil {
		src = &source{}
		f.srcs[a.From] = src
	}
	f.rmu.Unlock()

	// One batch of a source at a time: a retry racing the original (whose
	// reply was lost) waits, then finds its packets already delivered.
	src.mu.Lock()
	defer src.mu.Unlock()
	skip := 0
	if src.epoch == a.Epoch && src.next > a.Seq {
		skip = int(min(src.next-a.Seq, uint64(len(a.Packets))))
	}
	f.b.m.fwdDuplicates.Add(float64(skip))
	for _, p := range a.Packets[skip:] {
		// Counted on arrival, before delivery, so the counter never trails
		// what a subscriber has already seen (refusals also count below).
		f.b.m.fwdReceived.Inc()
		if err := f.inject(p); err != nil {
			f.b.m.fwdDropped.WithLabelValues("invalid").Inc()
			f.b.log.Warn("forwarded publish refused", "from", a.From, "topic", p.Topic, "error", err)
			continue
		}
		r.Delivered++
	}
	src.epoch, src.next = a.Epoch, a.Seq+uint64(len(a.Packets))
}

func (f *forwarder) inject(p ForwardPacket) error {
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
		},
	}
	if len(p.Props) > 0 {
		pk.Properties.User = make([]packets.UserProperty, len(p.Props))
		for i, u := range p.Props {
			pk.Properties.User[i] = packets.UserProperty{Key: u.Key, Val: u.Value}
		}
	}
	if p.QoS > 0 {
		pk.PacketID = uint16(p.QoS) // see inject in broker.go
	}
	if err := f.b.srv.InjectPacket(f.peerIn, pk); err != nil {
		return fmt.Errorf("broker: inject forwarded %s: %w", p.Topic, err)
	}
	return nil
}
