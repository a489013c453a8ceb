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
	"time"
)

// rawSub is a minimal MQTT 5 subscriber for the plain-MQTT scenarios:
// CONNECT, one SUBSCRIBE, then a read loop over a buffered reader that
// hands each PUBLISH payload to a callback and acknowledges QoS 1 with
// PUBACKs batched into one write per read burst. paho.golang reads every
// packet with several small reads and allocates a Publish and its
// properties per message; at tens of thousands of deliveries per second
// on the generator's one core that cost more CPU than the broker spent
// delivering (15 µs against 10 µs per delivery, measured with 200
// subscribers at 30k deliveries/s), so the generator, not the broker,
// would have set the ceiling of the rooms scenario.
type rawSub struct {
	conn  net.Conn
	br    *bufio.Reader
	wmu   sync.Mutex
	bw    *bufio.Writer
	done  chan struct{}
	once  sync.Once
	onMsg func(payload []byte)
}

// errProtocol is a packet the raw subscriber cannot make sense of.
var errProtocol = errors.New("MQTT protocol error")

// dialRawSub connects as clientID (user name user, no password: the
// plain scenarios are anonymous), subscribes to topic at qos, and starts
// reading. onMsg runs on the reading goroutine; its argument is only
// valid during the call.
func dialRawSub(ctx context.Context, addr, clientID, user, topic string, qos byte, onMsg func([]byte)) (*rawSub, error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	conn, err := dialConn(ctx, addr)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	s := &rawSub{conn: conn, br: bufio.NewReaderSize(conn, 16<<10), bw: bufio.NewWriterSize(conn, 512), done: make(chan struct{}), onMsg: onMsg}
	fail := func(err error) (*rawSub, error) {
		conn.Close()
		return nil, fmt.Errorf("raw subscriber %s on %s: %w", clientID, addr, err)
	}
	// CONNECT: protocol "MQTT" level 5, clean start, user name, keepalive
	// 60 s, receive maximum 1024.
	var vh []byte
	vh = appendString(vh, "MQTT")
	vh = append(vh, 5, 0x02|0x80, 0, 60)
	vh = append(vh, 3, 0x21, 0x04, 0x00) // properties: receive maximum 1024
	vh = appendString(vh, clientID)
	vh = appendString(vh, user)
	if err := s.writePacket(0x10, vh); err != nil {
		return fail(err)
	}
	typ, body, err := s.readPacket()
	if err != nil {
		return fail(err)
	}
	if typ>>4 != 2 || len(body) < 2 {
		return fail(fmt.Errorf("%w: want CONNACK, got packet type %d", errProtocol, typ>>4))
	}
	if body[1] >= 0x80 {
		return fail(fmt.Errorf("connection refused with reason 0x%02x: %w", body[1], errRefused))
	}
	// SUBSCRIBE packet ID 1, no properties, topic at qos.
	sub := []byte{0, 1, 0}
	sub = appendString(sub, topic)
	sub = append(sub, qos)
	if err := s.writePacket(0x82, sub); err != nil {
		return fail(err)
	}
	for {
		typ, body, err = s.readPacket()
		if err != nil {
			return fail(err)
		}
		if typ>>4 == 9 { // SUBACK
			break
		}
		if typ>>4 == 3 { // a retained or early message: fine, drop it
			continue
		}
		return fail(fmt.Errorf("%w: want SUBACK, got packet type %d", errProtocol, typ>>4))
	}
	// SUBACK: packet ID, properties, one reason code.
	if len(body) < 3 {
		return fail(fmt.Errorf("%w: short SUBACK", errProtocol))
	}
	plen, n := binary.Uvarint(body[2:])
	if n <= 0 || 2+n+int(plen) >= len(body) {
		return fail(fmt.Errorf("%w: malformed SUBACK", errProtocol))
	}
	if rc := body[2+n+int(plen)]; rc >= 0x80 {
		return fail(fmt.Errorf("subscribing to %s: %w: reason 0x%02x", topic, errRefused, rc))
	}
	_ = conn.SetDeadline(time.Time{})
	go s.readLoop()
	go s.pinger()
	return s, nil
}

func appendString(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

// writePacket writes one packet and flushes.
func (s *rawSub) writePacket(typ byte, body []byte) error {
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

// readPacket reads one packet; body is valid until the next read.
func (s *rawSub) readPacket() (typ byte, body []byte, err error) {
	typ, err = s.br.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	n, err := binary.ReadUvarint(s.br)
	if err != nil {
		return 0, nil, err
	}
	if n > 1<<20 {
		return 0, nil, fmt.Errorf("%w: packet of %d bytes", errProtocol, n)
	}
	// Peek avoids a copy when the packet is in the buffer already.
	if int(n) <= s.br.Size() {
		body, err = s.br.Peek(int(n))
		if err != nil {
			return 0, nil, err
		}
		_, _ = s.br.Discard(int(n))
		return typ, body, nil
	}
	body = make([]byte, n)
	_, err = io.ReadFull(s.br, body)
	return typ, body, err
}

func (s *rawSub) readLoop() {
	defer s.close()
	pending := 0 // PUBACKs buffered, not yet flushed
	for {
		typ, body, err := s.readPacket()
		if err != nil {
			return
		}
		switch typ >> 4 {
		case 3: // PUBLISH
			qos := (typ >> 1) & 3
			if len(body) < 2 {
				return
			}
			tl := int(binary.BigEndian.Uint16(body))
			i := 2 + tl
			var id uint16
			if qos > 0 {
				if i+2 > len(body) {
					return
				}
				id = binary.BigEndian.Uint16(body[i:])
				i += 2
			}
			plen, n := binary.Uvarint(body[i:])
			if n <= 0 || i+n+int(plen) > len(body) {
				return
			}
			s.onMsg(body[i+n+int(plen):])
			if qos == 1 {
				s.wmu.Lock()
				s.bw.Write([]byte{0x40, 2, byte(id >> 8), byte(id)})
				s.wmu.Unlock()
				pending++
			}
		case 14: // DISCONNECT from the server
			return
		}
		// Flush the PUBACKs once the burst that arrived together is read.
		if pending > 0 && s.br.Buffered() == 0 {
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

// pinger keeps the session alive: a subscriber that only receives sends
// nothing, and the server closes it after 1.5 keepalives of silence.
func (s *rawSub) pinger() {
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

func (s *rawSub) close() {
	s.once.Do(func() {
		close(s.done)
		_ = s.conn.Close()
	})
}

// Disconnect sends DISCONNECT and closes the connection.
func (s *rawSub) Disconnect() {
	_ = s.writePacket(0xE0, nil)
	s.close()
}
