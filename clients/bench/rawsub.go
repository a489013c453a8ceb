package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// rawClient is a minimal MQTT 5 client for the scenarios where the
// generator's own CPU would otherwise set the ceiling: CONNECT (with a
// token as password when there is one), at most one SUBSCRIBE, then a
// read loop over a buffered reader that hands each PUBLISH payload to a
// callback and acknowledges QoS 1 with PUBACKs batched into one write per
// read burst; as a publisher, QoS 1 PUBLISHes pipelined up to a fixed
// window, each PUBACK matched to its publish by packet ID.
//
// paho.golang reads every packet with several small reads, allocates a
// Publish and its properties per message and runs a goroutine per
// publish in flight; at tens of thousands of messages per second on the
// generator's one core that cost more CPU than the broker spent (15 µs
// against 10 µs per delivery, measured with 200 subscribers at 30k
// deliveries/s; ~35 µs per durable DM sent and delivered), so the
// generator, not the broker, would have set the ceiling.
type rawClient struct {
	conn  net.Conn
	br    *bufio.Reader
	wmu   sync.Mutex // bw, and the order of publishes on the wire
	bw    *bufio.Writer
	done  chan struct{}
	once  sync.Once
	onMsg func(payload []byte)

	// Publishing (window > 0).
	window     chan struct{} // one token per publish in flight
	onAck      func(tag int64, sent time.Time, err error)
	smu        sync.Mutex // slots, next, sendSeq, lastAckSeq, closed
	slots      []rawSlot  // packet ID i+1 is slots[i]
	next       int
	sendSeq    uint64
	lastAckSeq uint64
	closed     bool
	outOfOrder atomic.Int64 // PUBACKs that came before an earlier publish's
	strayAcks  atomic.Int64 // PUBACKs for no publish in flight
	hdr        [512]byte    // a PUBLISH's header, under wmu
	// refill, when set, runs on the reading goroutine after PUBACKs
	// freed slots: a closed loop sends its next publishes from there,
	// into the buffer that is written out once the burst of PUBACKs that
	// arrived together is read (one read and one write per burst, no
	// goroutine woken per message).
	refill atomic.Pointer[func()]
}

// rawSlot is one publish in flight.
type rawSlot struct {
	busy bool
	seq  uint64 // order on the wire, to check that PUBACKs come in order
	tag  int64
	sent time.Time
}

// rawOptions configure a rawClient.
type rawOptions struct {
	Addr, ClientID, User string
	Password             string // a token; "" sends none
	// ReceiveMaximum is what the client accepts in flight from the
	// server; 0 means 1024.
	ReceiveMaximum uint16
	Topic          string // subscribed to at QoS when not ""
	QoS            byte
	OnMsg          func(payload []byte) // on the reading goroutine; payload only valid during the call
	// Window > 0 allows publishing: at most Window QoS 1 publishes in
	// flight (capped by the server's Receive Maximum). OnAck runs on the
	// reading goroutine once for every publish that Publish accepted.
	Window int
	OnAck  func(tag int64, sent time.Time, err error)
}

// errProtocol is a packet the raw client cannot make sense of.
var errProtocol = errors.New("MQTT protocol error")

// errConnLost fails the publishes in flight when the connection ends.
var errConnLost = errors.New("connection lost before PUBACK")

// dialRawSub connects as clientID (user name user, no password: the
// plain scenarios are anonymous), subscribes to topic at qos, and starts
// reading. onMsg runs on the reading goroutine; its argument is only
// valid during the call.
func dialRawSub(ctx context.Context, addr, clientID, user, topic string, qos byte, onMsg func([]byte)) (*rawClient, error) {
	return dialRaw(ctx, rawOptions{Addr: addr, ClientID: clientID, User: user, Topic: topic, QoS: qos, OnMsg: onMsg})
}

// dialRaw connects, subscribes when asked, and starts reading.
func dialRaw(ctx context.Context, o rawOptions) (*rawClient, error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	conn, err := dialConn(ctx, o.Addr)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	s := &rawClient{conn: conn, br: bufio.NewReaderSize(conn, 16<<10), done: make(chan struct{}), onMsg: o.OnMsg, onAck: o.OnAck}
	wsize := 512
	if o.Window > 0 {
		wsize = 16 << 10
	}
	s.bw = bufio.NewWriterSize(conn, wsize)
	if s.onMsg == nil {
		s.onMsg = func([]byte) {}
	}
	fail := func(err error) (*rawClient, error) {
		conn.Close()
		return nil, fmt.Errorf("raw client %s on %s: %w", o.ClientID, o.Addr, err)
	}
	if err := s.writePacket(0x10, appendConnect(nil, o)); err != nil {
		return fail(err)
	}
	typ, body, err := s.readPacket()
	if err != nil {
		return fail(err)
	}
	if typ>>4 != 2 {
		return fail(fmt.Errorf("%w: want CONNACK, got packet type %d", errProtocol, typ>>4))
	}
	ca, err := parseConnack(body)
	if err != nil {
		return fail(err)
	}
	if ca.Reason >= 0x80 {
		return fail(fmt.Errorf("connection refused with reason 0x%02x %s: %w", ca.Reason, ca.ReasonString, errRefused))
	}
	if o.Window > 0 {
		w := o.Window
		if ca.ReceiveMaximum > 0 && int(ca.ReceiveMaximum) < w {
			w = int(ca.ReceiveMaximum)
		}
		if s.onAck == nil {
			s.onAck = func(int64, time.Time, error) {}
		}
		s.window = make(chan struct{}, w)
		// Twice the window: a packet ID is reused only long after its
		// PUBACK, and a free one is always near.
		s.slots = make([]rawSlot, min(2*w, 65535))
	}
	if o.Topic != "" {
		if err := s.subscribe(o.Topic, o.QoS); err != nil {
			return fail(err)
		}
	}
	_ = conn.SetDeadline(time.Time{})
	go s.readLoop()
	go s.pinger()
	return s, nil
}

// appendConnect encodes the variable header and payload of CONNECT:
// protocol "MQTT" level 5, clean start, keepalive 60 s, the receive
// maximum, client ID, user name and, when there is one, the password.
func appendConnect(b []byte, o rawOptions) []byte {
	rm := o.ReceiveMaximum
	if rm == 0 {
		rm = 1024
	}
	flags := byte(0x02 | 0x80)
	if o.Password != "" {
		flags |= 0x40
	}
	b = appendString(b, "MQTT")
	b = append(b, 5, flags, 0, 60)
	b = append(b, 3, 0x21, byte(rm>>8), byte(rm)) // properties: receive maximum
	b = appendString(b, o.ClientID)
	b = appendString(b, o.User)
	if o.Password != "" {
		b = appendString(b, o.Password)
	}
	return b
}

func (s *rawClient) subscribe(topic string, qos byte) error {
	// SUBSCRIBE packet ID 1, no properties, topic at qos.
	sub := []byte{0, 1, 0}
	sub = appendString(sub, topic)
	sub = append(sub, qos)
	if err := s.writePacket(0x82, sub); err != nil {
		return err
	}
	for {
		typ, body, err := s.readPacket()
		if err != nil {
			return err
		}
		switch typ >> 4 {
		case 9: // SUBACK
			rc, err := parseSuback(body)
			if err != nil {
				return err
			}
			if rc >= 0x80 {
				return fmt.Errorf("subscribing to %s: %w: reason 0x%02x", topic, errRefused, rc)
			}
			return nil
		case 3: // a retained or early message: fine, drop it
		default:
			return fmt.Errorf("%w: want SUBACK, got packet type %d", errProtocol, typ>>4)
		}
	}
}

func appendString(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

// writePacket writes one packet and flushes.
func (s *rawClient) writePacket(typ byte, body []byte) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.bw.WriteByte(typ)
	var l [binary.MaxVarintLen32]byte
	s.bw.Write(l[:putRemLen(l[:], len(body))])
	s.bw.Write(body)
	return s.bw.Flush()
}

// putRemLen encodes an MQTT remaining length (the same 7-bit varint as
// binary.PutUvarint).
func putRemLen(b []byte, n int) int { return binary.PutUvarint(b, uint64(n)) }

// maxRawPacket bounds what the client reads: the server's own limit is
// far below it.
const maxRawPacket = 1 << 20

// readPacket reads one packet; body is valid until the next read.
func (s *rawClient) readPacket() (typ byte, body []byte, err error) {
	return readRawPacket(s.br)
}

func readRawPacket(br *bufio.Reader) (typ byte, body []byte, err error) {
	typ, err = br.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	n, err := readRemLen(br)
	if err != nil {
		return 0, nil, err
	}
	if n > maxRawPacket {
		return 0, nil, fmt.Errorf("%w: packet of %d bytes", errProtocol, n)
	}
	// Peek avoids a copy when the packet is in the buffer already.
	if n <= br.Size() {
		body, err = br.Peek(n)
		if err != nil {
			return 0, nil, err
		}
		_, _ = br.Discard(n)
		return typ, body, nil
	}
	body = make([]byte, n)
	_, err = io.ReadFull(br, body)
	return typ, body, err
}

// readRemLen reads an MQTT remaining length: at most four bytes.
func readRemLen(br *bufio.Reader) (int, error) {
	n, shift := 0, 0
	for i := 0; i < 4; i++ {
		b, err := br.ReadByte()
		if err != nil {
			return 0, err
		}
		n |= int(b&0x7f) << shift
		if b < 0x80 {
			return n, nil
		}
		shift += 7
	}
	return 0, fmt.Errorf("%w: remaining length over four bytes", errProtocol)
}

// rawPublish is a parsed PUBLISH.
type rawPublish struct {
	QoS     byte
	ID      uint16 // QoS > 0
	Topic   []byte
	Payload []byte
}

// parsePublish parses the variable header and payload of a PUBLISH whose
// fixed header byte is typ; the slices point into body.
func parsePublish(typ byte, body []byte) (rawPublish, error) {
	var p rawPublish
	p.QoS = (typ >> 1) & 3
	if p.QoS == 3 {
		return p, fmt.Errorf("%w: PUBLISH with QoS 3", errProtocol)
	}
	if len(body) < 2 {
		return p, fmt.Errorf("%w: short PUBLISH", errProtocol)
	}
	tl := int(binary.BigEndian.Uint16(body))
	i := 2 + tl
	if i > len(body) {
		return p, fmt.Errorf("%w: PUBLISH topic past the end", errProtocol)
	}
	p.Topic = body[2:i]
	if p.QoS > 0 {
		if i+2 > len(body) {
			return p, fmt.Errorf("%w: PUBLISH without packet ID", errProtocol)
		}
		p.ID = binary.BigEndian.Uint16(body[i:])
		i += 2
	}
	props, rest, err := splitProps(body[i:])
	if err != nil {
		return p, err
	}
	_ = props
	p.Payload = rest
	return p, nil
}

// splitProps splits a property length and the properties off b.
func splitProps(b []byte) (props, rest []byte, err error) {
	plen, n := binary.Uvarint(b)
	if n <= 0 || n > 4 || plen > uint64(len(b)-n) {
		return nil, nil, fmt.Errorf("%w: malformed property length", errProtocol)
	}
	return b[n : n+int(plen)], b[n+int(plen):], nil
}

// rawAck is a parsed PUBACK.
type rawAck struct {
	ID           uint16
	Reason       byte
	ReasonString string // only set for a failure
}

// parsePuback parses a PUBACK body: packet ID, and when present the
// reason code and properties (a reason string is kept for failures).
func parsePuback(body []byte) (rawAck, error) {
	var a rawAck
	if len(body) < 2 {
		return a, fmt.Errorf("%w: short PUBACK", errProtocol)
	}
	a.ID = binary.BigEndian.Uint16(body)
	if len(body) == 2 {
		return a, nil
	}
	a.Reason = body[2]
	if len(body) == 3 {
		return a, nil
	}
	props, _, err := splitProps(body[3:])
	if err != nil {
		return a, err
	}
	if a.Reason >= 0x80 {
		err = walkProps(props, func(id byte, v []byte) {
			if id == 0x1F {
				a.ReasonString = string(v)
			}
		})
	}
	return a, err
}

// rawConnack is a parsed CONNACK.
type rawConnack struct {
	Reason         byte
	ReceiveMaximum uint16 // 0: not given (65,535)
	ReasonString   string
}

func parseConnack(body []byte) (rawConnack, error) {
	var c rawConnack
	if len(body) < 2 {
		return c, fmt.Errorf("%w: short CONNACK", errProtocol)
	}
	c.Reason = body[1]
	if len(body) == 2 {
		return c, nil
	}
	props, _, err := splitProps(body[2:])
	if err != nil {
		return c, err
	}
	err = walkProps(props, func(id byte, v []byte) {
		switch id {
		case 0x21:
			c.ReceiveMaximum = binary.BigEndian.Uint16(v)
		case 0x1F:
			c.ReasonString = string(v)
		}
	})
	return c, err
}

// parseSuback returns the first reason code of a SUBACK.
func parseSuback(body []byte) (byte, error) {
	if len(body) < 3 {
		return 0, fmt.Errorf("%w: short SUBACK", errProtocol)
	}
	_, rest, err := splitProps(body[2:])
	if err != nil || len(rest) < 1 {
		return 0, fmt.Errorf("%w: malformed SUBACK", errProtocol)
	}
	return rest[0], nil
}

// walkProps calls f with the identifier and the value of every MQTT 5
// property in b (a string's or binary's value without its length; a
// user property's whole pair).
func walkProps(b []byte, f func(id byte, v []byte)) error {
	for len(b) > 0 {
		id := b[0]
		b = b[1:]
		var n int
		switch id {
		case 0x01, 0x17, 0x19, 0x24, 0x25, 0x28, 0x29, 0x2A: // byte
			n = 1
		case 0x13, 0x21, 0x22, 0x23: // two-byte integer
			n = 2
		case 0x02, 0x11, 0x18, 0x27: // four-byte integer
			n = 4
		case 0x0B: // variable byte integer
			_, k := binary.Uvarint(b)
			if k <= 0 || k > 4 {
				return fmt.Errorf("%w: malformed property 0x%02x", errProtocol, id)
			}
			n = k
		case 0x03, 0x08, 0x12, 0x15, 0x1A, 0x1C, 0x1F, 0x09, 0x16: // string, binary
			if len(b) < 2 {
				return fmt.Errorf("%w: short property 0x%02x", errProtocol, id)
			}
			l := int(binary.BigEndian.Uint16(b))
			if 2+l > len(b) {
				return fmt.Errorf("%w: property 0x%02x past the end", errProtocol, id)
			}
			f(id, b[2:2+l])
			b = b[2+l:]
			continue
		case 0x26: // user property: two strings
			n = 0
			for range 2 {
				if n+2 > len(b) {
					return fmt.Errorf("%w: short user property", errProtocol)
				}
				n += 2 + int(binary.BigEndian.Uint16(b[n:]))
			}
			if n > len(b) {
				return fmt.Errorf("%w: user property past the end", errProtocol)
			}
		default:
			return fmt.Errorf("%w: unknown property 0x%02x", errProtocol, id)
		}
		if n > len(b) {
			return fmt.Errorf("%w: property 0x%02x past the end", errProtocol, id)
		}
		f(id, b[:n])
		b = b[n:]
	}
	return nil
}

// pubackError describes a PUBACK that refused a publish, the same way
// for the raw and the paho client so that their error tallies compare.
func pubackError(rc byte, reason string) error {
	return fmt.Errorf("PUBACK 0x%02x %s", rc, reason)
}

func (s *rawClient) readLoop() {
	defer s.close()
	pending := 0 // PUBACKs buffered, not yet flushed
	for {
		typ, body, err := s.readPacket()
		if err != nil {
			return
		}
		switch typ >> 4 {
		case 3: // PUBLISH
			p, err := parsePublish(typ, body)
			if err != nil {
				return
			}
			s.onMsg(p.Payload)
			if p.QoS == 1 {
				s.wmu.Lock()
				s.bw.Write([]byte{0x40, 2, byte(p.ID >> 8), byte(p.ID)})
				s.wmu.Unlock()
				pending++
			}
		case 4: // PUBACK
			a, err := parsePuback(body)
			if err != nil {
				return
			}
			s.acked(a)
			if f := s.refill.Load(); f != nil {
				(*f)()
				pending++
			}
		case 14: // DISCONNECT from the server
			return
		}
		// Flush the PUBACKs (and refills) once the burst that arrived
		// together is read: before a read that would wait for the network.
		if pending > 0 && !packetBuffered(s.br) {
			s.wmu.Lock()
			err := s.bw.Flush()
			s.wmu.Unlock()
			if err != nil {
				return
			}
			pending = 0
		}
	}
}

// packetBuffered reports whether a whole packet is in br's buffer, so
// that reading it needs no system call.
func packetBuffered(br *bufio.Reader) bool {
	n := br.Buffered()
	if n < 2 {
		return false
	}
	b, _ := br.Peek(min(n, 5))
	l, shift := 0, 0
	for i := 1; i < len(b); i++ {
		l |= int(b[i]&0x7f) << shift
		if b[i] < 0x80 {
			return n >= i+1+l
		}
		shift += 7
	}
	return false
}

// acked matches a PUBACK to its publish.
func (s *rawClient) acked(a rawAck) {
	i := int(a.ID) - 1
	s.smu.Lock()
	if s.window == nil || i < 0 || i >= len(s.slots) || !s.slots[i].busy {
		s.smu.Unlock()
		s.strayAcks.Add(1)
		return
	}
	sl := s.slots[i]
	s.slots[i].busy = false
	if sl.seq < s.lastAckSeq {
		s.outOfOrder.Add(1)
	} else {
		s.lastAckSeq = sl.seq
	}
	s.smu.Unlock()
	var err error
	if a.Reason >= 0x80 {
		err = pubackError(a.Reason, a.ReasonString)
	}
	s.onAck(sl.tag, sl.sent, err)
	<-s.window
}

// Acquire waits until fewer than the window are in flight and takes a
// slot for one Send. What is buffered is written out before it waits.
func (s *rawClient) Acquire(ctx context.Context) error {
	select {
	case <-s.done:
		return errConnLost
	default:
	}
	select {
	case s.window <- struct{}{}:
		return nil
	default:
	}
	s.wmu.Lock()
	err := s.bw.Flush()
	s.wmu.Unlock()
	if err != nil {
		s.close()
		return err
	}
	select {
	case s.window <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-s.done:
		return errConnLost
	}
}

// TryAcquire takes a slot for one Send if one is free.
func (s *rawClient) TryAcquire() bool {
	select {
	case s.window <- struct{}{}:
		return true
	default:
		return false
	}
}

// Send writes payload to topic at QoS 1 in the slot Acquire took; the
// PUBACK (or the loss of the connection) is reported to OnAck with tag
// and the time the publish was written (SendAt: a time given). With more, the packet may wait
// in the buffer for the next one (Acquire and Flush write it out); it is
// written out at once when more is false. An error means the publish was
// not sent and OnAck will not run for it. Publishes of one client go out
// in the order of the calls.
func (s *rawClient) Send(topic string, payload []byte, tag int64, more bool) error {
	return s.SendAt(topic, payload, tag, time.Time{}, more)
}

// SendAt is Send with the time OnAck reports (zero: when it is written):
// an open loop passes the time the publish was due, so that a publish
// that waited for a free slot is timed from its slot, not from its late
// write (that would hide the wait: coordinated omission).
func (s *rawClient) SendAt(topic string, payload []byte, tag int64, at time.Time, more bool) error {
	if at.IsZero() {
		at = time.Now()
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.smu.Lock()
	if s.closed {
		s.smu.Unlock()
		<-s.window
		return errConnLost
	}
	for s.slots[s.next].busy {
		s.next = (s.next + 1) % len(s.slots)
	}
	id := s.next + 1
	s.sendSeq++
	s.slots[s.next] = rawSlot{busy: true, seq: s.sendSeq, tag: tag, sent: at}
	s.next = (s.next + 1) % len(s.slots)
	s.smu.Unlock()
	// From here on OnAck runs for this publish: on its PUBACK, or from
	// close when the connection fails.
	s.bw.Write(appendPublishHeader(s.hdr[:0], topic, uint16(id), len(payload)))
	s.bw.Write(payload)
	if !more {
		if err := s.bw.Flush(); err != nil {
			go s.close() // fails this publish through OnAck
		}
	}
	return nil
}

// Publish is Acquire then Send.
func (s *rawClient) Publish(ctx context.Context, topic string, payload []byte, tag int64, more bool) error {
	if err := s.Acquire(ctx); err != nil {
		return err
	}
	return s.Send(topic, payload, tag, more)
}

// appendPublishHeader appends the fixed header, topic, packet ID and
// (empty) properties of a QoS 1 PUBLISH with a payload of n bytes.
func appendPublishHeader(b []byte, topic string, id uint16, n int) []byte {
	b = append(b, 0x32)
	var l [binary.MaxVarintLen32]byte
	b = append(b, l[:putRemLen(l[:], 2+len(topic)+2+1+n)]...)
	b = appendString(b, topic)
	b = binary.BigEndian.AppendUint16(b, id)
	return append(b, 0)
}

// Flush writes out buffered publishes.
func (s *rawClient) Flush() error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return s.bw.Flush()
}

// InFlight is the number of publishes awaiting their PUBACK.
func (s *rawClient) InFlight() int { return len(s.window) }

// pinger keeps the session alive: a subscriber that only receives sends
// nothing, and the server closes it after 1.5 keepalives of silence.
func (s *rawClient) pinger() {
	t := time.NewTicker(20 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
			if err := s.writePacket(0xC0, nil); err != nil {
				return
			}
		}
	}
}

// close ends the connection and fails the publishes still in flight.
func (s *rawClient) close() {
	s.once.Do(func() {
		// closed is set before done closes: a Send that sees the
		// connection open registers its publish before the sweep below.
		var lost []rawSlot
		if s.window != nil {
			s.smu.Lock()
			s.closed = true
			for i := range s.slots {
				if s.slots[i].busy {
					lost = append(lost, s.slots[i])
					s.slots[i].busy = false
				}
			}
			s.smu.Unlock()
		}
		_ = s.conn.Close()
		for _, sl := range lost {
			s.onAck(sl.tag, sl.sent, errConnLost)
			<-s.window
		}
		// done closes last: whoever waits on it sees every outcome.
		close(s.done)
	})
}

// Disconnect sends DISCONNECT and closes the connection.
func (s *rawClient) Disconnect() {
	_ = s.writePacket(0xE0, nil)
	s.close()
}
