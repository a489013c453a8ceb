package broker

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// A --dev node of a cluster that starts (restarted, or joining) takes the
// retained messages of open topics from another node: retained messages
// live in memory only, every retained publish is forwarded to every
// node, and without this a node that restarted had none of those the
// others kept (the retained presence comes back through the presence
// service). Outside --dev no open topic exists.

// retainedRestoreFor bounds how long a starting node keeps asking the
// other members for their retained messages.
const retainedRestoreFor = time.Minute

// RetainedArgs asks a node for its retained messages. Exported for gob.
type RetainedArgs struct{ From string }

// RetainedReply holds a node's retained messages of open topics.
type RetainedReply struct{ Packets []ForwardPacket }

// Retained answers a starting node with this node's retained messages of
// open topics.
func (s *forwardRPC) Retained(a *RetainedArgs, r *RetainedReply) error {
	now := time.Now().Unix()
	for topic, pk := range s.f.b.srv.Topics.Retained.GetAll() {
		if !devOpen(topic) || len(pk.Payload) == 0 {
			continue
		}
		fp := toForward(pk)
		r.Packets = append(r.Packets, fp)
	}
	r.Packets = withExpiryLeft(r.Packets, now)
	return nil
}

// retainedRestore is the state of a node's restore: the topics retained
// or cleared here since it began, which a copy from another node must
// not replace (theirs is as old, or older).
type retainedRestore struct {
	active  atomic.Bool
	mu      sync.Mutex
	touched map[string]bool
}

// touch records a retained publish here (OnRetainMessage).
func (r *retainedRestore) touch(topic string) {
	if !r.active.Load() {
		return
	}
	r.mu.Lock()
	if r.touched != nil {
		r.touched[topic] = true
	}
	r.mu.Unlock()
}

// restoreRetained asks the other members, in turn, for their retained
// messages until one answers, and retains here those of topics nothing
// was retained on or cleared from since it began. It gives up after
// retainedRestoreFor (a single node, or no other member answering).
func (f *forwarder) restoreRetained(ctx context.Context) {
	r := &f.b.restore
	r.mu.Lock()
	r.touched = map[string]bool{}
	r.mu.Unlock()
	r.active.Store(true)
	defer func() {
		r.active.Store(false)
		r.mu.Lock()
		r.touched = nil
		r.mu.Unlock()
	}()
	ctx, cancel := context.WithTimeout(ctx, retainedRestoreFor)
	defer cancel()
	for {
		for name, m := range *f.members.Load() {
			if name == f.self {
				continue
			}
			var reply RetainedReply
			cctx, ccancel := context.WithTimeout(ctx, f.b.cfg.ForwardTimeout)
			err := f.cluster.Call(cctx, m.Addr, RPCService+".Retained", &RetainedArgs{From: f.self}, &reply)
			ccancel()
			if err != nil {
				f.b.log.Debug("retained messages not taken from a member", "from", name, "error", err)
				continue
			}
			n := f.restoreFrom(reply.Packets)
			f.b.log.Info("retained messages taken from another node", "from", name, "messages", n)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-f.cluster.MembersChanged():
		case <-time.After(time.Second):
		}
	}
}

// restoreFrom retains the packets whose topics nothing was retained on or
// cleared from here meanwhile; it returns how many it retained.
func (f *forwarder) restoreFrom(pks []ForwardPacket) int {
	n := 0
	for _, p := range pks {
		if !devOpen(p.Topic) || len(p.Payload) == 0 || !p.Retain {
			continue
		}
		f.b.retainMu.Lock()
		f.b.restore.mu.Lock()
		_, here := f.b.srv.Topics.Retained.Get(p.Topic)
		skip := here || f.b.restore.touched[p.Topic]
		f.b.restore.mu.Unlock()
		if !skip {
			if err := f.injectLocked(p); err != nil {
				f.b.log.Debug("retained message of another node refused", "topic", p.Topic, "error", err)
			} else {
				n++
			}
		}
		f.b.retainMu.Unlock()
	}
	return n
}

// OnRetainMessage: a message retained or cleared here (a client's
// publish, a forwarded one, a will) is newer than the copy a restore may
// be about to take from another node.
func (h *hook) OnRetainMessage(_ *mqtt.Client, pk packets.Packet, _ int64) {
	h.b.restore.touch(pk.TopicName)
}
