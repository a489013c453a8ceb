package region

import (
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"

	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/internal/wire"
)

// routesOf is a route table whose filters the test changes.
type routesOf struct {
	mu      sync.Mutex
	filters []string
}

func (r *routesOf) Nodes() []string { return []string{"n1"} }
func (r *routesOf) Filters(string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.filters...)
}
func (r *routesOf) OnChange(func(node, filter string)) {}
func (r *routesOf) set(f ...string) {
	r.mu.Lock()
	r.filters = f
	r.mu.Unlock()
}

// presenceRecorder records what the link retains on presence topics.
// A publish of late (the presence the peer sent as the link
// unsubscribed) waits until the link has retained "unknown" for that
// topic: paho hands a PUBLISH to the link on a goroutine of its own,
// while the UNSUBACK that follows it on the wire ends the Unsubscribe
// call on another, so the PUBLISH may well be handled after the link's
// "unknown"; the wait makes that order certain.
type presenceRecorder struct {
	late    string
	mu      sync.Mutex
	out     []wire.Outbound
	unknown chan struct{}
	once    sync.Once
}

func (p *presenceRecorder) Publish(o wire.Outbound) error {
	if strings.Contains(string(o.Payload), p.late) && strings.Contains(string(o.Payload), `"online"`) {
		select {
		case <-p.unknown:
		case <-time.After(5 * time.Second):
		}
	}
	p.mu.Lock()
	p.out = append(p.out, o)
	p.mu.Unlock()
	if strings.Contains(string(o.Payload), `"unknown"`) {
		p.once.Do(func() { close(p.unknown) })
	}
	return nil
}

// last is the last payload retained on topic, "" for none.
func (p *presenceRecorder) last(topic string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := ""
	for _, o := range p.out {
		if o.Topic == topic {
			s = string(o.Payload)
		}
	}
	return s
}

// Only the presence of users this region watches is taken from the
// other region, and nothing of a user once the link unsubscribed from
// them: a presence the other region sent before it handled the
// UNSUBSCRIBE (legitimately in flight) was retained after the link's
// "unknown", so GET /presence/bob@us answered "online" for good though
// nobody watched bob any more; and a peer could make this region retain
// the presence of as many users of its as it liked (each kept on every
// node and in the link's memory).
func TestPresenceTakenOnlyForWatchedUsers(t *testing.T) {
	const late = "2026-01-02T03:04:05Z"
	url := fakePeer(t, func(c net.Conn) {
		go answerMQTT(c, func(p any) {
			publish := func(topic, payload string) {
				pk := packets.NewControlPacket(packets.PUBLISH)
				pk.Content.(*packets.Publish).Topic = topic
				pk.Content.(*packets.Publish).Payload = []byte(payload)
				_, _ = pk.WriteTo(c)
			}
			switch p := p.(type) {
			case *packets.Subscribe:
				sa := packets.NewControlPacket(packets.SUBACK)
				sa.Content.(*packets.Suback).PacketID = p.PacketID
				bob := false
				for _, s := range p.Subscriptions {
					sa.Content.(*packets.Suback).Reasons = append(sa.Content.(*packets.Suback).Reasons, 0)
					bob = bob || s.Topic == "presence/bob"
				}
				_, _ = sa.WriteTo(c)
				if bob {
					publish("presence/bob", `{"status":"online","lastSeen":"2026-01-01T00:00:00Z"}`)
					publish("presence/mallory", `{"status":"online","lastSeen":"2026-01-01T00:00:00Z"}`) // never asked for
				}
			case *packets.Unsubscribe:
				// In flight when the UNSUBSCRIBE arrived: sent before the UNSUBACK.
				publish("presence/bob", `{"status":"online","lastSeen":"`+late+`"}`)
				ua := packets.NewControlPacket(packets.UNSUBACK)
				ua.Content.(*packets.Unsuback).PacketID = p.PacketID
				for range p.Topics {
					ua.Content.(*packets.Unsuback).Reasons = append(ua.Content.(*packets.Unsuback).Reasons, 0)
				}
				_, _ = ua.WriteTo(c)
			}
		})
	})
	routes := &routesOf{filters: []string{"presence/bob@us"}}
	rec := &presenceRecorder{late: late, unknown: make(chan struct{})}
	eph := runEphemeralLink(t, url, routes, rec)
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if got := rec.last("presence/bob@us"); !strings.Contains(got, `"online"`) {
			return fmt.Errorf("presence/bob@us: %q, want bob online", got)
		}
		return nil
	})
	// Nobody here watches bob any more: the link unsubscribes and shows
	// him unknown, and so he stays.
	routes.set()
	eph.wake()
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if !strings.Contains(rec.last("presence/bob@us"), `"unknown"`) {
			return fmt.Errorf("presence/bob@us: %q, want unknown", rec.last("presence/bob@us"))
		}
		return nil
	})
	// The PUBLISH sent before the UNSUBACK has been handled by now in
	// the old order (it waited for the unknown above): give it the time
	// it needs to be recorded if it is to be, by the link's own next
	// step, a resubscription of bob, which shows bob online again only
	// once the peer answers it.
	routes.set("presence/bob@us")
	eph.wake()
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if !strings.Contains(rec.last("presence/bob@us"), `"online"`) {
			return fmt.Errorf("presence/bob@us: %q, want online again", rec.last("presence/bob@us"))
		}
		return nil
	})
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, o := range rec.out {
		if o.Topic == "presence/mallory@us" {
			t.Errorf("the link retained %s %s, a user nobody here watches", o.Topic, o.Payload)
		}
		if strings.Contains(string(o.Payload), late) && strings.Contains(string(o.Payload), `"online"`) {
			t.Errorf("the link retained %s %s, sent as it unsubscribed, after showing bob unknown", o.Topic, o.Payload)
		}
	}
}
