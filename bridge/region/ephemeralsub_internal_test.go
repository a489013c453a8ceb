package region

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"

	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/internal/wire"
)

// oldRegion is an MQTT 5 server standing for a region of an earlier
// version: it refuses (0x87) the subscription to refuse and grants every
// other, and records each connection's subscriptions.
type oldRegion struct {
	refuse string
	mu     sync.Mutex
	subs   [][]string // per connection, in order
}

func (o *oldRegion) serve(t *testing.T) string {
	t.Helper()
	return fakePeer(t, func(c net.Conn) {
		o.mu.Lock()
		o.subs = append(o.subs, nil)
		conn := len(o.subs) - 1
		o.mu.Unlock()
		go o.conn(c, conn)
	})
}

func (o *oldRegion) conn(c net.Conn, conn int) {
	answerMQTT(c, func(p any) {
		sub, ok := p.(*packets.Subscribe)
		if !ok {
			return
		}
		sa := packets.NewControlPacket(packets.SUBACK)
		sa.Content.(*packets.Suback).PacketID = sub.PacketID
		o.mu.Lock()
		for _, s := range sub.Subscriptions {
			code := byte(0)
			if s.Topic == o.refuse {
				code = 0x87
			}
			sa.Content.(*packets.Suback).Reasons = append(sa.Content.(*packets.Suback).Reasons, code)
			o.subs[conn] = append(o.subs[conn], s.Topic)
		}
		o.mu.Unlock()
		_, _ = sa.WriteTo(c)
	})
}

type oneRoute []string

func (r oneRoute) Nodes() []string                    { return []string{"n1"} }
func (r oneRoute) Filters(string) []string            { return r }
func (r oneRoute) OnChange(func(node, filter string)) {}

type dropPublisher struct{}

func (dropPublisher) Publish(wire.Outbound) error { return nil }

// A linked region that refuses one of the link's subscriptions (an
// earlier version without group typing) keeps the link connection: the
// refused filter is logged and skipped, and the watched users' presence
// is still subscribed on it. The whole connection used to be dropped,
// and the link reconnected for ever without any presence.
func TestRefusedSubscriptionKeepsTheLink(t *testing.T) {
	old := &oldRegion{refuse: GroupTypingFilter("eu")}
	url := old.serve(t)
	runEphemeralLink(t, url, oneRoute{"presence/bob@us"}, dropPublisher{})
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		old.mu.Lock()
		defer old.mu.Unlock()
		if len(old.subs) != 1 {
			return fmt.Errorf("%d connections: %q", len(old.subs), old.subs)
		}
		for _, f := range old.subs[0] {
			if f == "presence/bob" {
				return nil
			}
		}
		return fmt.Errorf("subscribed %q", old.subs[0])
	})
}

// runEphemeralLink runs the ephemeral link of a test bridge (region eu)
// to region us at url, with routes and pub, until the test ends.
func runEphemeralLink(t *testing.T, url string, routes Routes, pub Publisher) *ephemeral {
	t.Helper()
	b := testEphemeral(t).b
	b.cfg.Timeout, b.cfg.BackoffMax = 5*time.Second, 50*time.Millisecond
	b.deps.Routes, b.deps.Publisher = routes, pub
	lc := &linkClient{link: Link{Name: "us", URL: url, Secret: "a-shared-link-secret-of-the-test"}, own: "eu", log: b.log, m: b.m, dialTO: 5 * time.Second}
	eph := newEphemeral(b, lc)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); eph.run(ctx) }()
	t.Cleanup(func() {
		cancel()
		lc.close()
		<-done
	})
	return eph
}
