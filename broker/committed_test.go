package broker

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/internal/testutil/mqtttest"
	"github.com/edgechat/edgechat/internal/wire"
)

// appliedLog stands for the replicated archive: every message committed
// through any node's chat store is "applied" on each node that delivers
// committed messages itself, which hands it to its broker's
// DeliverCommitted as the archive does (services/archive/live.go).
type appliedLog struct {
	mu      sync.Mutex
	chat    *fakeChat // one store for every node: one ID space, one dedupe
	brokers []*Broker // the nodes that deliver from their apply
}

func (l *appliedLog) applied(env wire.Envelope, payload []byte, dup bool, err error) (wire.Envelope, []byte, bool, error) {
	if err == nil && !dup {
		l.mu.Lock()
		bs := append([]*Broker(nil), l.brokers...)
		l.mu.Unlock()
		topics := []string{wire.DirectTopic(env.To), wire.DirectTopic(env.From)}
		if env.Group != "" {
			topics = []string{wire.GroupTopic(env.Group)}
		}
		props := []wire.Prop{{Key: "id", Value: env.ID.String()}, {Key: "from", Value: env.From}}
		for _, b := range bs {
			for _, t := range topics {
				b.DeliverCommitted(wire.Outbound{Topic: t, Payload: payload, QoS: 1, UserProps: props, Scope: wire.ScopeLocal})
			}
		}
	}
	return env, payload, dup, err
}

// versionedChat is a node's chat store over the shared log: a node of
// this version (applies) delivers what it commits from its apply, an
// older one does not say so.
type versionedChat struct {
	log     *appliedLog
	applies bool
}

func (c versionedChat) DeliversCommitted() bool { return c.applies }

func (c versionedChat) SendDirect(ctx context.Context, from, to string, env wire.Envelope) (wire.Envelope, []byte, bool, error) {
	return c.log.applied(c.log.chat.SendDirect(ctx, from, to, env))
}

func (c versionedChat) SendGroup(ctx context.Context, from, gid string, env wire.Envelope) (wire.Envelope, []byte, bool, error) {
	return c.log.applied(c.log.chat.SendGroup(ctx, from, gid, env))
}

func (c versionedChat) StartDirect(ctx context.Context, from, to string, env wire.Envelope) (func(context.Context) (wire.Envelope, []byte, bool, error), error) {
	return started(c.SendDirect(ctx, from, to, env))
}

func (c versionedChat) StartGroup(ctx context.Context, from, gid string, env wire.Envelope) (func(context.Context) (wire.Envelope, []byte, bool, error), error) {
	return started(c.SendGroup(ctx, from, gid, env))
}

// A rolling upgrade: n1 and n2 deliver committed messages from their own
// apply, n3 is of an earlier version and delivers what it is forwarded.
// Whichever node a message is sent on, each of the recipient's devices
// gets it exactly once: n1 and n2 deliver their own copy and drop what
// n3 forwards them, and a message sent on n1 or n2 is forwarded to n3
// alone.
func TestCommittedMessagesDuringARollingUpgrade(t *testing.T) {
	log := &appliedLog{chat: &fakeChat{}}
	c := startClusterOf(t, 3, func(c *clusterEnv) {
		c.chats = map[string]ChatStore{
			"n1": versionedChat{log: log, applies: true},
			"n2": versionedChat{log: log, applies: true},
			"n3": versionedChat{log: log},
		}
	})
	log.mu.Lock()
	log.brokers = []*Broker{c.nodes["n1"].b, c.nodes["n2"].b}
	log.mu.Unlock()

	devices := map[string]*mqtttest.Client{}
	for _, node := range []string{"n1", "n2", "n3"} {
		d := mustV5(t, c.nodes[node].addr, "bob", "on-"+node)
		d.MustSub(t, "user/bob/newMessage")
		devices[node] = d
		c.waitRoute(t, node, "user/bob/newMessage", true)
	}
	senders := map[string]*mqtttest.Client{}
	for _, node := range []string{"n1", "n2", "n3"} {
		senders[node] = mustV5(t, c.nodes[node].addr, "alice", "at-"+node)
	}
	var sent []string
	for round := range 3 {
		for _, node := range []string{"n1", "n3", "n2"} {
			cid := fmt.Sprintf("%s-%d", node, round)
			if code, _ := senders[node].Pub(t, "user/bob/newMessage", 1, envelope(cid, cid)); code != 0 {
				t.Fatalf("publish on %s: reason %#02x", node, code)
			}
			sent = append(sent, cid)
		}
	}
	count := func(d *mqtttest.Client) map[string]int {
		got := map[string]int{}
		for _, m := range d.Received("user/bob/newMessage") {
			env, err := wire.ParseEnvelope(m.Payload)
			if err != nil {
				t.Fatalf("delivery %s: %v", m.Payload, err)
			}
			got[env.CID]++
		}
		return got
	}
	testutil.CheckFor(t, waitFor, 5*time.Millisecond, func() error {
		for node, d := range devices {
			if got := count(d); len(got) < len(sent) {
				return fmt.Errorf("bob on %s has %d of %d messages", node, len(got), len(sent))
			}
		}
		return nil
	})
	// Let a second copy arrive, if one is on its way: the forwards of
	// n3 and of n1/n2 before they learnt the others' version.
	time.Sleep(200 * time.Millisecond)
	for node, d := range devices {
		got := count(d)
		for _, cid := range sent {
			if got[cid] != 1 {
				t.Errorf("bob on %s received %s %d times, want once", node, cid, got[cid])
			}
		}
	}
}
