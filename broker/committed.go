package broker

import (
	"context"
	"sync"
	"sync/atomic"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgechat/edgechat/internal/wire"
)

// Committed chat messages reach this node's subscribers from this node's
// own apply (services/archive/live.go): the archive hands each one to
// DeliverCommitted on the FSM's goroutine, which queues it; one goroutine
// delivers the queue in order through an inline client of its own, whose
// publishes are never forwarded (every node delivers its own). The
// delivery runs off the FSM's goroutine because mochi's delivery runs the
// access check, which may wait for this node to catch up with the cluster,
// that is for the FSM.
//
// Nodes of an earlier version do not deliver from their apply: the node a
// message was sent on forwards it to them (ScopeOlderPeers, see
// forwarder.forwardOlder), and what they forward of their own messages is
// dropped here (forwarder.receive), since this node delivers those too.

// maxCommittedQueue bounds the committed messages waiting for delivery
// (a few seconds of a busy node): past it they are dropped, counted in
// edgechat_mqtt_messages_dropped_total{reason="live_queue_full"}, and
// the node's signed-in connections are closed so that their clients
// sync (slowsubscriber.go): the dropped ones are in history.
const maxCommittedQueue = 1 << 16

type committedQueue struct {
	mu   sync.Mutex
	q    []wire.Outbound
	max  int           // maxCommittedQueue (tests set less)
	wake chan struct{} // capacity 1: something was queued
	// dropped is set when a message did not fit the queue; the delivering
	// goroutine then has the clients sync.
	dropped atomic.Bool
	in      *mqtt.Client // the inline client that delivers them
}

func newCommittedQueue(srv *mqtt.Server) *committedQueue {
	in := srv.NewClient(nil, mqtt.LocalListener, "edgechat-committed", true)
	in.Properties.ProtocolVersion = 5
	return &committedQueue{max: maxCommittedQueue, wake: make(chan struct{}, 1), in: in}
}

// DeliverCommitted queues a committed message for this node's own
// subscribers (o.Scope is ignored: always this node's). It never blocks.
func (b *Broker) DeliverCommitted(o wire.Outbound) {
	c := b.committed
	c.mu.Lock()
	if len(c.q) >= c.max {
		c.mu.Unlock()
		b.m.dropped.WithLabelValues(wire.ParseTopic(o.Topic).Kind.String(), "live_queue_full").Inc()
		c.dropped.Store(true)
		return
	}
	c.q = append(c.q, o)
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// deliversCommitted reports whether the chat store delivers committed
// messages on every node itself (wire.CommittedDeliverer).
func (b *Broker) deliversCommitted() bool {
	d, ok := b.deps.Chat.(wire.CommittedDeliverer)
	return ok && d.DeliversCommitted()
}

// runCommitted delivers the queue until ctx ends.
func (b *Broker) runCommitted(ctx context.Context) {
	c := b.committed
	var batch []wire.Outbound
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.wake:
		}
		c.mu.Lock()
		batch, c.q = c.q, batch[:0]
		c.mu.Unlock()
		for i := range batch {
			b.injectCommitted(&batch[i])
			batch[i] = wire.Outbound{} // let the payload go
		}
		if c.dropped.Swap(false) {
			// Every client connected when a message was dropped is still
			// connected now or gone; one that connected since synced after
			// the drop, which the message's apply preceded.
			b.m.refused.WithLabelValues("live_queue_full").Inc()
			go func() {
				n := b.resyncClients(busyLiveQueue)
				b.log.Warn("committed messages did not fit the live delivery queue: closed the signed-in connections so that their clients sync", "connections", n)
			}()
		}
	}
}

func (b *Broker) injectCommitted(o *wire.Outbound) {
	if !b.srv.Topics.HasSubscribers(o.Topic) {
		// Most recipients have no session on a given node: mochi's
		// publish path (the packet copied through the hooks) for nobody
		// was ~3% of three nodes' CPU at saturation (docs/perf/targets.md).
		// A subscription made after this check reads the message by sync.
		return
	}
	if err := b.injectAs(b.committed.in, o.Topic, o.Payload, false, o.QoS, userProps(o.UserProps)); err != nil {
		b.log.Warn("committed message not delivered live", "topic", o.Topic, "error", err)
	}
}

// userProps converts wire properties to MQTT user properties.
func userProps(ps []wire.Prop) []packets.UserProperty {
	if len(ps) == 0 {
		return nil
	}
	out := make([]packets.UserProperty, len(ps))
	for i, p := range ps {
		out[i] = packets.UserProperty{Key: p.Key, Val: p.Value}
	}
	return out
}
