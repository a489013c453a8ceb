package main

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// The durable modes (latency, throughput, durable) publish chat envelopes
// from one connection per sender through a durablePub: the raw MQTT
// client (the default: a few µs of generator CPU per message) or paho
// (--client paho, the client they used before, kept for comparison).

// clientKinds are the values of --client.
const (
	clientRaw  = "raw"
	clientPaho = "paho"
)

func validClient(k string) error {
	if k != clientRaw && k != clientPaho {
		return fmt.Errorf("%w: --client must be %q or %q, not %q", errUsage, clientRaw, clientPaho, k)
	}
	return nil
}

// ackFunc receives the outcome of a publish: tag as given to publish,
// its stamp (when it was due; when it was written for an unstamped
// one), and nil or why it failed (a refusing PUBACK
// reads "PUBACK 0xNN reason" with either client).
type ackFunc func(tag int64, sent time.Time, err error)

// durablePub sends the envelopes of one sender. publish and setPrefix
// are called from one goroutine at a time.
type durablePub interface {
	// setPrefix sets the cid prefix of the following messages: the cid
	// of message k is prefix + k.
	setPrefix(prefix string)
	// publish sends message k to receiver to, with stamp as its send
	// time in the body and the start of its PUBACK latency (an open
	// loop's due time; zero: the time the slot was taken), once the
	// sender has a publish slot free (ctx ends the wait). With more, a raw client may buffer it with the
	// next ones. A nil error means the ackFunc will run for it.
	publish(ctx context.Context, to int, k int64, stamp time.Time, tag int64, more bool) error
	// closedLoop keeps the window full with messages 0, 1, 2, ... (message
	// k to receiver to(k)) until ctx ends; sends that fail are reported
	// to the ackFunc with tag 0.
	closedLoop(ctx context.Context, to func(k int64) int)
	// wait waits up to timeout for the publishes in flight.
	wait(timeout time.Duration)
	// stats: PUBACKs out of order and PUBACKs for nothing in flight
	// (raw client only; paho matches them itself).
	stats() (outOfOrder, stray int64)
	close()
}

// durablePubOptions describe a sender's connection.
type durablePubOptions struct {
	Kind     string // clientRaw or clientPaho
	Addr     string
	User     string
	Token    string
	Topics   []string // one per receiver
	Window   int      // publishes in flight at most
	BodySize int
	OnAck    ackFunc
}

func dialDurablePub(ctx context.Context, o durablePubOptions) (durablePub, error) {
	if o.Kind == clientPaho {
		c, err := dial(ctx, dialOptions{Addr: o.Addr, User: o.User, Device: "bench", Token: o.Token, ReceiveMaximum: 16})
		if err != nil {
			return nil, err
		}
		return &pahoPub{c: c, o: o, sem: make(chan struct{}, o.Window)}, nil
	}
	p := &rawPub{o: o}
	c, err := dialRaw(ctx, rawOptions{Addr: o.Addr, ClientID: o.User + "/bench", User: o.User, Password: o.Token,
		ReceiveMaximum: 16, Window: o.Window, OnAck: o.OnAck})
	if err != nil {
		return nil, err
	}
	p.c = c
	return p, nil
}

// rawPub publishes with the raw client: the envelope is written into one
// reused buffer with the cid's number and the send time spliced in (no
// JSON encoding, no allocation per message).
type rawPub struct {
	o      durablePubOptions
	c      *rawClient
	prefix string
	buf    []byte
}

func (p *rawPub) setPrefix(prefix string) { p.prefix = prefix }

func (p *rawPub) publish(ctx context.Context, to int, k int64, stamp time.Time, tag int64, more bool) error {
	if err := p.c.Acquire(ctx); err != nil {
		return err
	}
	if stamp.IsZero() {
		stamp = time.Now()
	}
	p.buf = appendEnvelope(p.buf[:0], p.prefix, k, stamp.UnixNano(), p.o.BodySize)
	return p.c.SendAt(p.o.Topics[to], p.buf, tag, stamp, more)
}

func (p *rawPub) closedLoop(ctx context.Context, to func(k int64) int) {
	var (
		mu   sync.Mutex // k, buf: the filler below and the refills
		k    int64
		dead bool
	)
	fill := func() {
		mu.Lock()
		defer mu.Unlock()
		for !dead && ctx.Err() == nil && p.c.TryAcquire() {
			p.buf = appendEnvelope(p.buf[:0], p.prefix, k, time.Now().UnixNano(), p.o.BodySize)
			if err := p.c.Send(p.o.Topics[to(k)], p.buf, 0, true); err != nil {
				p.o.OnAck(0, time.Now(), err)
				dead = true // the connection failed: do not spin
			}
			k++
		}
	}
	p.c.refill.Store(&fill)
	fill()
	_ = p.c.Flush()
	<-ctx.Done()
	p.c.refill.Store(nil)
}

func (p *rawPub) wait(timeout time.Duration) {
	_ = p.c.Flush()
	deadline := time.Now().Add(timeout)
	for p.c.InFlight() > 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
}

func (p *rawPub) stats() (int64, int64) { return p.c.outOfOrder.Load(), p.c.strayAcks.Load() }

func (p *rawPub) close() { p.c.Disconnect() }

// pahoPub publishes with paho: a goroutine per publish in flight, a
// fresh payload per message.
type pahoPub struct {
	c      *paho.Client
	o      durablePubOptions
	prefix string
	sem    chan struct{}
	wg     sync.WaitGroup
}

func (p *pahoPub) setPrefix(prefix string) { p.prefix = prefix }

func (p *pahoPub) publish(ctx context.Context, to int, k int64, stamp time.Time, tag int64, _ bool) error {
	select {
	case p.sem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	if stamp.IsZero() {
		stamp = time.Now()
	}
	payload := messagePayload(p.prefix+strconv.FormatInt(k, 10), stamp, p.o.BodySize)
	topic := p.o.Topics[to]
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer func() { <-p.sem }()
		// Not the run's context: a publish on the wire is waited for (up
		// to paho's packet timeout) even when the run ends.
		resp, err := p.c.Publish(context.WithoutCancel(ctx), &paho.Publish{QoS: 1, Topic: topic, Payload: payload})
		if resp != nil && resp.ReasonCode >= 0x80 {
			err = pubackError(resp.ReasonCode, pubackReason(resp))
		}
		// Timed from the stamp (an open loop's due time), not from
		// this write: a publish that waited for a slot counts its wait.
		p.o.OnAck(tag, stamp, err)
	}()
	return nil
}

func (p *pahoPub) closedLoop(ctx context.Context, to func(k int64) int) {
	for k := int64(0); ctx.Err() == nil; k++ {
		if err := p.publish(ctx, to(k), k, time.Time{}, 0, true); err != nil {
			return
		}
	}
}

func (p *pahoPub) wait(timeout time.Duration) {
	done := make(chan struct{})
	go func() { p.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(timeout):
	}
}

func (p *pahoPub) stats() (int64, int64) { return 0, 0 }

func (p *pahoPub) close() { _ = p.c.Disconnect(&paho.Disconnect{}) }

func pubackReason(r *paho.PublishResponse) string {
	if r.Properties != nil {
		return r.Properties.ReasonString
	}
	return ""
}

// padding is sliced for envelope bodies (the server's limit is 8 KiB).
var padding = strings.Repeat("x", 8192)

// appendEnvelope appends the envelope messagePayload(cidPrefix+k, stamp,
// size) builds, without building strings: the bytes are the same.
func appendEnvelope(b []byte, cidPrefix string, k, stampNanos int64, size int) []byte {
	b = append(b, `{"cid":"`...)
	b = append(b, cidPrefix...)
	b = strconv.AppendInt(b, k, 10)
	b = append(b, `","type":"text","body":"`...)
	n0 := len(b)
	b = strconv.AppendInt(b, stampNanos, 10)
	if pad := size - (len(b) - n0) - 1; pad > 0 {
		b = append(b, ' ')
		b = append(b, padding[:min(pad, len(padding))]...)
	}
	return append(b, `"}`...)
}

// messagePayload is a chat envelope whose body starts with the send time
// in Unix nanoseconds, so that a receiver can measure delivery latency,
// padded to at least size bytes of body. Built by hand: the fields are
// plain ASCII and json.Marshal would only cost client CPU.
func messagePayload(cid string, sent time.Time, size int) []byte {
	body := strconv.FormatInt(sent.UnixNano(), 10)
	if pad := size - len(body) - 1; pad > 0 {
		body += " " + strings.Repeat("x", pad)
	}
	return []byte(`{"cid":"` + cid + `","type":"text","body":"` + body + `"}`)
}

var (
	cidField  = []byte(`"cid":"`)
	bodyField = []byte(`"body":"`)
)

// envelopeCID returns the "cid" of a delivered envelope, a slice of it.
func envelopeCID(b []byte) ([]byte, bool) {
	i := bytes.Index(b, cidField)
	if i < 0 {
		return nil, false
	}
	b = b[i+len(cidField):]
	j := bytes.IndexByte(b, '"')
	if j < 0 {
		return nil, false
	}
	return b[:j], true
}

// sentTime extracts the send time written by messagePayload from a
// delivered envelope ({"id":...,"body":"<nanos> xxx",...}).
func sentTime(envelope []byte) (time.Time, bool) {
	i := bytes.Index(envelope, bodyField)
	if i < 0 {
		return time.Time{}, false
	}
	ns, n := parseDigits(envelope[i+len(bodyField):])
	if n == 0 || n > 19 {
		return time.Time{}, false
	}
	if n < len(envelope)-i-len(bodyField) {
		if c := envelope[i+len(bodyField)+n]; c != ' ' && c != '"' {
			return time.Time{}, false
		}
	}
	return time.Unix(0, ns), true
}

// parseDigits parses the leading decimal digits of b (at most 19) and
// says how many there were.
func parseDigits(b []byte) (int64, int) {
	var v int64
	n := 0
	for n < len(b) && n < 19 && b[n] >= '0' && b[n] <= '9' {
		v = v*10 + int64(b[n]-'0')
		n++
	}
	return v, n
}

// parseSenderSeq parses "{sender}-{k}", the end of a bench cid after its
// step prefix.
func parseSenderSeq(b []byte) (sender int, k int64, ok bool) {
	s, n := parseDigits(b)
	if n == 0 || n >= len(b) || b[n] != '-' {
		return 0, 0, false
	}
	k, m := parseDigits(b[n+1:])
	if m == 0 || n+1+m != len(b) || s > 1<<30 {
		return 0, 0, false
	}
	return int(s), k, true
}
