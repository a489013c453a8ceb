package region

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	"github.com/eclipse/paho.golang/paho/session"
	"github.com/eclipse/paho.golang/paho/session/state"
)

// The window: a link keeps up to linkWindow batch publishes in flight
// instead of waiting for each PUBACK before the next publish, across
// peerqueue batches (stream.go), fewer while the other region's queue
// grows (flow.go). Over a 100 ms round trip, one publish per round trip
// capped a link at about one batch (≤ 60 KiB) per round trip plus the
// other region's commit.
//
// Order is kept: the publishes are written in outbox order by one
// goroutine, the other region handles a link connection's publishes one
// after another in that order (broker.publishLink runs on the
// connection's reader), and after a publish failed there the broker
// refuses the later ones of the same connection (so none commits ahead
// of the failed one). The PUBACKs are taken in order; the first failure
// drops the connection and fails the whole peerqueue batch, and the
// queue sends again from the cursor (the origin IDs deduplicate what had
// committed). The cursor moves past a batch only when its every publish,
// and every batch before it, was acknowledged (or refused for good).

// linkWindow is how many batch publishes a link has in flight at most by
// default (Config.Window; the other region's broker allows its Receive
// Maximum, 1,024 or more).
const linkWindow = 16

// ackSession is paho's in-memory session that hands the PUBACK of the
// next batch publish to a channel of the link's: paho's asynchronous
// publish returns once the packet is written, in order, and tells
// nothing of its acknowledgement.
type ackSession struct {
	*state.State
	topic string // the link's batch topic
	flow  *flow  // the window (flow.go)

	mu   sync.Mutex
	next chan<- packets.ControlPacket
}

func newAckSession(topic string, window int) *ackSession {
	if window <= 0 {
		window = linkWindow
	}
	return &ackSession{State: state.NewInMemory(), topic: topic, flow: newFlow(window)}
}

// expect makes ch the answer channel of the next publish on the batch
// topic (nil: none).
func (s *ackSession) expect(ch chan<- packets.ControlPacket) {
	s.mu.Lock()
	s.next = ch
	s.mu.Unlock()
}

// AddToSession is State's, the answer of a batch publish going to the
// channel expect named.
func (s *ackSession) AddToSession(ctx context.Context, packet session.Packet, resp chan<- packets.ControlPacket) error {
	if p, ok := packet.(*packets.Publish); ok && p.Topic == s.topic {
		s.mu.Lock()
		if s.next != nil {
			resp, s.next = s.next, nil
		}
		s.mu.Unlock()
	}
	return s.State.AddToSession(ctx, packet, resp)
}

// pub is one batch publish written, waiting for its PUBACK.
type pub struct {
	ack  <-chan packets.ControlPacket // its PUBACK (or what paho answers when it ends)
	sent time.Time
}

// errLinkLost is a publish's fate when the connection ended first.
var errLinkLost = errors.New("connection ended before the PUBACK")

// publish writes payloads on the batch topic in order, each once a slot
// of the connection's window is free (sess.flow: a slot is freed when
// the publish's PUBACK arrives or the connection ends, whoever waits for
// it), and returns them, to be waited for with await. It returns the
// first failure to publish; the caller drops the connection then (which
// frees the slots of what was written).
func (l *linkClient) publish(ctx context.Context, cl *paho.Client, sess *ackSession, alive context.Context, payloads [][]byte) ([]pub, error) {
	out := make([]pub, 0, len(payloads))
	for _, payload := range payloads {
		if err := sess.flow.acquire(ctx, alive); err != nil {
			return out, fmt.Errorf("region: link %s: publish: %w", l.link.Name, err)
		}
		ack := make(chan packets.ControlPacket, 1) // the session never blocks on it
		fwd := make(chan packets.ControlPacket, 1)
		sent := time.Now()
		go func() { // one per publish in flight, ending with its PUBACK or the connection
			var rtt time.Duration
			select {
			case resp := <-ack:
				now := time.Now()
				if resp.Type == packets.PUBACK {
					rtt = max(now.Sub(sent), time.Microsecond)
				}
				fwd <- resp
				sess.flow.release(rtt, now)
			case <-alive.Done():
				sess.flow.release(0, time.Time{})
			}
		}()
		sess.expect(ack)
		pctx, cancel := context.WithTimeout(ctx, l.dialTO)
		stop := context.AfterFunc(alive, cancel)
		_, err := cl.PublishWithOptions(pctx, &paho.Publish{QoS: 1, Topic: sess.topic, Payload: payload},
			paho.PublishOptions{Method: paho.PublishMethod_AsyncSend})
		stop()
		cancel()
		sess.expect(nil)
		if err != nil {
			return out, fmt.Errorf("region: link %s: publish: %w", l.link.Name, err)
		}
		out = append(out, pub{ack: fwd, sent: sent})
	}
	return out, nil
}

// await takes the PUBACKs of pubs in order, each within the timeout of
// its write, and calls done(i, reason code) for each (done's error
// stops it: a refusal to resend). It returns the first failure to get a
// PUBACK; the caller drops the connection then.
func (l *linkClient) await(ctx, alive context.Context, pubs []pub, done func(i int, code byte, reason string) error) error {
	timer := time.NewTimer(l.dialTO)
	defer timer.Stop()
	for i, p := range pubs {
		timer.Reset(max(time.Until(p.sent.Add(l.dialTO)), 0))
		var resp packets.ControlPacket
		select {
		case resp = <-p.ack:
		case <-alive.Done():
			return fmt.Errorf("region: link %s: publish: %w", l.link.Name, errLinkLost)
		case <-ctx.Done():
			return fmt.Errorf("region: link %s: publish: %w", l.link.Name, ctx.Err())
		case <-timer.C:
			return fmt.Errorf("region: link %s: publish: no PUBACK within %v", l.link.Name, l.dialTO)
		}
		pa, ok := resp.Content.(*packets.Puback)
		if resp.Type != packets.PUBACK || !ok {
			return fmt.Errorf("region: link %s: publish: %w", l.link.Name, errLinkLost) // removed from the session
		}
		reason := ""
		if pa.Properties != nil {
			reason = pa.Properties.ReasonString
		}
		if err := done(i, pa.ReasonCode, reason); err != nil {
			return err
		}
	}
	return nil
}
