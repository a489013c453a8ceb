// SPDX-License-Identifier: MIT

//go:build unix

package mqtt

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

// encodeGate blocks, once, the encoding (OnPacketEncode) of the first
// packet that match accepts, until resume is closed. It models the
// encoding goroutine being descheduled at that point.
type encodeGate struct {
	HookBase
	mu      sync.Mutex
	match   func(cl *Client, pk packets.Packet) bool
	entered chan struct{}
	resume  chan struct{}
}

func (h *encodeGate) ID() string           { return "encode-gate" }
func (h *encodeGate) Provides(b byte) bool { return b == OnPacketEncode }
func (h *encodeGate) OnPacketEncode(cl *Client, pk packets.Packet) packets.Packet {
	h.mu.Lock()
	m := h.match
	hit := m != nil && m(cl, pk)
	entered, resume := h.entered, h.resume
	if hit {
		h.match = nil
	}
	h.mu.Unlock()
	if hit {
		close(entered)
		<-resume
	}
	return pk
}

// arm sets the gate; it returns entered and resume.
func (h *encodeGate) arm(match func(cl *Client, pk packets.Packet) bool) (chan struct{}, chan struct{}) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.match, h.entered, h.resume = match, make(chan struct{}), make(chan struct{})
	return h.entered, h.resume
}

func startOrderServer(t *testing.T, direct bool) (*Server, string, *encodeGate) {
	t.Helper()
	s := New(&Options{InlineClient: true, ClientDirectWrites: direct,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	gate := new(encodeGate)
	if err := s.AddHook(new(allowAll), nil); err != nil {
		t.Fatal(err)
	}
	if err := s.AddHook(gate, nil); err != nil {
		t.Fatal(err)
	}
	ln := listeners.NewTCP(listeners.Config{ID: "t", Address: "127.0.0.1:0"})
	if err := s.AddListener(ln); err != nil {
		t.Fatal(err)
	}
	if err := s.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, ln.Address(), gate
}

// dialNoAck sends a CONNECT (persistent session, Receive Maximum max)
// and returns without reading the CONNACK.
func dialNoAck(t *testing.T, addr, id string, max uint16) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetReadDeadline(time.Now().Add(15 * time.Second))
	writeV5(t, c, packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Connect},
		Connect:     packets.ConnectParams{ProtocolName: []byte("MQTT"), Keepalive: 60, ClientIdentifier: id},
		Properties: packets.Properties{SessionExpiryInterval: 600, SessionExpiryIntervalFlag: true,
			ReceiveMaximum: max},
	})
	return c, bufio.NewReader(c)
}

func forBothWriteModes(t *testing.T, f func(t *testing.T, direct bool)) {
	for _, direct := range []bool{false, true} {
		t.Run(fmt.Sprintf("direct=%v", direct), func(t *testing.T) { f(t, direct) })
	}
}

func packetString(pk packets.Packet) string {
	if pk.FixedHeader.Type == packets.Publish {
		return fmt.Sprintf("PUBLISH(%q,dup=%v)", pk.Payload, pk.FixedHeader.Dup)
	}
	return fmt.Sprintf("type %d", pk.FixedHeader.Type)
}

// Patch 33: a QoS 0 delivery to a session being taken over was written
// before the new connection's CONNACK (patch 25 only stored QoS>0
// deliveries during the handshake); it is dropped now.
func TestNoQoS0DeliveryBeforeTheConnack(t *testing.T) {
	forBothWriteModes(t, func(t *testing.T, direct bool) {
		s, addr, gate := startOrderServer(t, direct)
		c, r := connectReceiveMax(t, addr, "phone", 10)
		subscribeV5(t, c, 1, "a/b")
		if ack := readPacket(t, r, 5); ack.FixedHeader.Type != packets.Suback {
			t.Fatalf("SUBACK: %+v", ack)
		}
		old, _ := s.Clients.Get("phone")
		_ = c.Close()
		waitUntil(t, "closed", old.Closed)

		entered, resume := gate.arm(func(cl *Client, pk packets.Packet) bool {
			return pk.FixedHeader.Type == packets.Connack && cl != old
		})
		c2, r2 := dialNoAck(t, addr, "phone", 10)
		<-entered // the new client is in the client map, its CONNACK being encoded
		if err := s.Publish("a/b", []byte("live"), false, 0); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond) // let a queued write happen
		close(resume)
		_ = c2.SetReadDeadline(time.Now().Add(5 * time.Second))
		first := readPacket(t, r2, 5)
		if first.FixedHeader.Type != packets.Connack {
			t.Fatalf("first packet on the new connection: %s, want CONNACK", packetString(first))
		}
	})
}

// Before patch 33 (found in review): a held-back delivery released by a PUBACK (sendHeld, WritePacket
// from the read goroutine) overtakes an earlier delivery of the same
// topic that waits in the outbound queue. The queue is made non-empty by
// a QoS 0 packet the write loop has taken and is still encoding
// (descheduled): "1" is then queued behind it (writeDirect sees
// outboundQty > 0), and the PUBACK's sendHeld finds the queue non-empty
// and appends "2" to outbuf, which is written before the queue.
func TestReleasedHeldDeliveryStaysBehindQueuedOnes(t *testing.T) {
	forBothWriteModes(t, func(t *testing.T, direct bool) {
		s, addr, gate := startOrderServer(t, direct)
		c, r := connectReceiveMax(t, addr, "phone", 2)
		subscribeV5(t, c, 1, "a/b")
		if ack := readPacket(t, r, 5); ack.FixedHeader.Type != packets.Suback {
			t.Fatalf("SUBACK: %+v", ack)
		}
		cl, _ := s.Clients.Get("phone")
		if err := s.Publish("a/b", []byte("0"), false, 1); err != nil {
			t.Fatal(err)
		}
		p0 := readPacket(t, r, 5)
		if string(p0.Payload) != "0" {
			t.Fatalf("got %s", packetString(p0))
		}

		entered, resume := gate.arm(func(_ *Client, pk packets.Packet) bool {
			return pk.FixedHeader.Type == packets.Publish && string(pk.Payload) == "x"
		})
		x := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: "other", Payload: []byte("x")}
		if !cl.enqueueOutbound(&x) {
			t.Fatal("queue full")
		}
		<-entered
		for _, m := range []string{"1", "2"} {
			if err := s.Publish("a/b", []byte(m), false, 1); err != nil {
				t.Fatal(err)
			}
		}
		if h := cl.State.Inflight.Held(); h != 1 {
			t.Fatalf("held %d, want 1", h)
		}
		// The PUBACK of "0" frees a slot: the read goroutine sends "2".
		writeV5(t, c, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: p0.PacketID})
		time.Sleep(100 * time.Millisecond)
		close(resume)
		var got []string
		for len(got) < 2 {
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			pk := readPacket(t, r, 5)
			if pk.TopicName == "a/b" {
				got = append(got, string(pk.Payload))
			}
		}
		if got[0] != "1" || got[1] != "2" {
			t.Fatalf("deliveries after 0: %q, want [1 2]", got)
		}
	})
}

// Before patch 33 (found in review): at the end of a takeover handshake the session's unacknowledged
// delivery is resent (connectClient, resendInflight) after handshaking
// is cleared; a new delivery of the same topic meanwhile is written
// first by its publisher.
func TestResendAfterTakeoverGoesBeforeNewDeliveries(t *testing.T) {
	forBothWriteModes(t, func(t *testing.T, direct bool) {
		s, addr, gate := startOrderServer(t, direct)
		c, r := connectReceiveMax(t, addr, "phone", 10)
		subscribeV5(t, c, 1, "a/b")
		if ack := readPacket(t, r, 5); ack.FixedHeader.Type != packets.Suback {
			t.Fatalf("SUBACK: %+v", ack)
		}
		old, _ := s.Clients.Get("phone")
		if err := s.Publish("a/b", []byte("0"), false, 1); err != nil {
			t.Fatal(err)
		}
		_ = readPacket(t, r, 5) // not acknowledged
		_ = c.Close()
		waitUntil(t, "closed", old.Closed)

		entered, resume := gate.arm(func(cl *Client, pk packets.Packet) bool {
			return cl != old && pk.FixedHeader.Type == packets.Publish && pk.FixedHeader.Dup && string(pk.Payload) == "0"
		})
		c2, r2 := dialNoAck(t, addr, "phone", 10)
		<-entered // CONNACK written, the resend of "0" being encoded
		if err := s.Publish("a/b", []byte("1"), false, 1); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
		close(resume)
		_ = c2.SetReadDeadline(time.Now().Add(5 * time.Second))
		var got []string
		for i := 0; i < 3; i++ {
			got = append(got, packetString(readPacket(t, r2, 5)))
		}
		want := []string{"type 2", `PUBLISH("0",dup=true)`, `PUBLISH("1",dup=false)`}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("new connection got %v, want %v", got, want)
		}
	})
}

// Before patch 33 (found in review): deliveries made during a takeover handshake are held; at its end
// connectClient's sendHeld releases them one by one while a publisher,
// whose new delivery is held behind them, runs sendHeld too: each
// releases the oldest under the inflight lock, but writes after it, so
// they go out in either order.
func TestHeldDeliveriesReleasedConcurrentlyStayInOrder(t *testing.T) {
	forBothWriteModes(t, func(t *testing.T, direct bool) {
		s, addr, gate := startOrderServer(t, direct)
		c, r := connectReceiveMax(t, addr, "phone", 10)
		subscribeV5(t, c, 1, "a/b")
		if ack := readPacket(t, r, 5); ack.FixedHeader.Type != packets.Suback {
			t.Fatalf("SUBACK: %+v", ack)
		}
		old, _ := s.Clients.Get("phone")
		_ = c.Close()
		waitUntil(t, "closed", old.Closed)

		// Hold the CONNACK while 1 and 2 are delivered (stored, held).
		entered, resume := gate.arm(func(cl *Client, pk packets.Packet) bool {
			return cl != old && pk.FixedHeader.Type == packets.Connack
		})
		c2, r2 := dialNoAck(t, addr, "phone", 10)
		<-entered
		for _, m := range []string{"1", "2"} {
			if err := s.Publish("a/b", []byte(m), false, 1); err != nil {
				t.Fatal(err)
			}
		}
		// Then the release of "1" by connectClient's sendHeld is
		// descheduled in its encoding.
		gate.mu.Lock()
		entered1, resume1 := make(chan struct{}), make(chan struct{})
		gate.match = func(cl *Client, pk packets.Packet) bool {
			return cl != old && pk.FixedHeader.Type == packets.Publish && string(pk.Payload) == "1"
		}
		gate.entered, gate.resume = entered1, resume1
		gate.mu.Unlock()
		close(resume)
		<-entered1
		// A new delivery: held behind "2"; its publisher's sendHeld
		// releases "2" and "3".
		published := make(chan error, 1)
		go func() { published <- s.Publish("a/b", []byte("3"), false, 1) }()
		time.Sleep(50 * time.Millisecond)
		close(resume1)
		if err := <-published; err != nil {
			t.Fatal(err)
		}
		_ = c2.SetReadDeadline(time.Now().Add(5 * time.Second))
		var got []string
		for i := 0; i < 4; i++ {
			got = append(got, packetString(readPacket(t, r2, 5)))
		}
		want := []string{"type 2", `PUBLISH("1",dup=false)`, `PUBLISH("2",dup=false)`, `PUBLISH("3",dup=false)`}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("new connection got %v, want %v", got, want)
		}
	})
}

// Before patch 33 (found in review): a QoS 1 publish to a slow subscriber blocks the publisher: the
// subscriber's write loop holds the client's lock in a blocking write
// (flushOutbuf / writeBuffer), and storeInflight's NextPacketID takes
// that lock (under sessionEnd). Every other subscriber of the publish
// waits with it, until the slow socket drains or its write deadline
// (1.5 x keepalive) passes.
func TestSlowSubscriberDoesNotBlockQoS1Publishers(t *testing.T) {
	forBothWriteModes(t, func(t *testing.T, direct bool) {
		s, addr, _ := startOrderServer(t, direct)
		slow, sr := connectReceiveMax(t, addr, "slow", 10)
		subscribeV5(t, slow, 1, "a/b")
		subscribeV5(t, slow, 2, "big")
		for i := 0; i < 2; i++ {
			if ack := readPacket(t, sr, 5); ack.FixedHeader.Type != packets.Suback {
				t.Fatalf("SUBACK: %+v", ack)
			}
		}
		fast, fr := connectReceiveMax(t, addr, "fast", 10)
		subscribeV5(t, fast, 1, "a/b")
		if ack := readPacket(t, fr, 5); ack.FixedHeader.Type != packets.Suback {
			t.Fatalf("SUBACK: %+v", ack)
		}
		// The slow subscriber stops reading: QoS 0 traffic fills its
		// socket, its write loop blocks in a write holding its lock.
		big := make([]byte, 64<<10)
		for i := 0; i < 300; i++ {
			if err := s.Publish("big", big, false, 0); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(200 * time.Millisecond)
		done := make(chan error, 1)
		go func() { done <- s.Publish("a/b", []byte("hello"), false, 1) }()
		returned := false
		select {
		case <-done:
			returned = true
		case <-time.After(3 * time.Second):
			t.Errorf("a QoS 1 publish still blocked after 3 s by a subscriber that does not read")
		}
		_ = fast.SetReadDeadline(time.Now().Add(2 * time.Second))
		if b, err := fr.Peek(1); err != nil || len(b) == 0 {
			t.Errorf("the fast subscriber got nothing: %v", err)
		}
		_ = slow.Close() // unblocks the server (test cleanup)
		if !returned {
			<-done
		}
	})
}

// The released-held case without any hook: one publisher, one topic, QoS 1, a client
// with Receive Maximum 2 that acknowledges each delivery at once. Checks
// that deliveries arrive in publish order.
func TestDeliveriesInOrderUnderReceiveMaximum(t *testing.T) {
	forBothWriteModes(t, func(t *testing.T, direct bool) {
		s, addr, _ := startOrderServer(t, direct)
		c, r := connectReceiveMax(t, addr, "phone", 2)
		subscribeV5(t, c, 1, "a/b")
		if ack := readPacket(t, r, 5); ack.FixedHeader.Type != packets.Suback {
			t.Fatalf("SUBACK: %+v", ack)
		}
		const n = 3000
		go func() {
			for i := 0; i < n; i++ {
				_ = s.Publish("a/b", []byte(fmt.Sprint(i)), false, 1)
			}
		}()
		next, inversions := 0, 0
		for next < n {
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			pk := readPacket(t, r, 5)
			writeV5(t, c, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID})
			var v int
			fmt.Sscan(string(pk.Payload), &v)
			if v != next {
				inversions++
				if inversions < 5 {
					t.Logf("got %d, want %d", v, next)
				}
			}
			if v >= next {
				next = v + 1
			}
		}
		if inversions > 0 {
			t.Errorf("%d deliveries out of publish order in %d", inversions, n)
		}
	})
}

// The released-held case with no hook: a slow consumer. The client's socket is full,
// so "1" waits in the outbound queue behind QoS 0 traffic; "2" is held
// back (Receive Maximum 2); the PUBACK of "0" releases "2", whose
// WritePacket from the read goroutine goes to outbuf, ahead of the
// queue. Queued writes only (with direct writes, the publish of "1"
// blocks on the slow client's lock: R5).
func TestHeldDeliveryStaysBehindQueuedOnesOfASlowConsumer(t *testing.T) {
	s, addr, _ := startOrderServer(t, false)
	c, r := connectReceiveMax(t, addr, "phone", 2)
	subscribeV5(t, c, 1, "a/b")
	if ack := readPacket(t, r, 5); ack.FixedHeader.Type != packets.Suback {
		t.Fatalf("SUBACK: %+v", ack)
	}
	subscribeV5(t, c, 2, "big")
	if ack := readPacket(t, r, 5); ack.FixedHeader.Type != packets.Suback {
		t.Fatalf("SUBACK: %+v", ack)
	}
	cl, _ := s.Clients.Get("phone")
	if err := s.Publish("a/b", []byte("0"), false, 1); err != nil {
		t.Fatal(err)
	}
	p0 := readPacket(t, r, 5)
	if string(p0.Payload) != "0" {
		t.Fatalf("got %s", packetString(p0))
	}
	big := make([]byte, 64<<10)
	for i := 0; i < 300; i++ {
		if err := s.Publish("big", big, false, 0); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range []string{"1", "2"} {
		if err := s.Publish("a/b", []byte(m), false, 1); err != nil {
			t.Fatal(err)
		}
	}
	if h := cl.State.Inflight.Held(); h != 1 {
		t.Fatalf("held %d, want 1", h)
	}
	writeV5(t, c, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: p0.PacketID})
	time.Sleep(100 * time.Millisecond)
	var got []string
	for len(got) < 2 {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		pk := readPacket(t, r, 5)
		if pk.TopicName == "a/b" {
			got = append(got, string(pk.Payload))
		}
	}
	if got[0] != "1" || got[1] != "2" {
		t.Fatalf("deliveries after 0: %q, want [1 2]", got)
	}
}

// Before patch 33 (found in review): a QoS 1 delivery too large for the client's Maximum Packet Size
// is stored inflight with its send quota taken, then not written
// (writeDirect / WritePacket fail to encode it) and never discarded: the
// quota is lost for the connection ([MQTT-3.1.2-25] wants it treated as
// sent and completed), and the next delivery waits for ever with a
// Receive Maximum of 1.
func TestOversizeDeliveryGivesItsQuotaBack(t *testing.T) {
	forBothWriteModes(t, func(t *testing.T, direct bool) {
		s, addr, _ := startOrderServer(t, direct)
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		writeV5(t, c, packets.Packet{
			FixedHeader: packets.FixedHeader{Type: packets.Connect},
			Connect:     packets.ConnectParams{ProtocolName: []byte("MQTT"), Keepalive: 60, ClientIdentifier: "phone"},
			Properties: packets.Properties{SessionExpiryInterval: 600, SessionExpiryIntervalFlag: true,
				ReceiveMaximum: 1, MaximumPacketSize: 200},
		})
		r := bufio.NewReader(c)
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if ack := readPacket(t, r, 5); ack.FixedHeader.Type != packets.Connack {
			t.Fatalf("CONNACK: %+v", ack)
		}
		subscribeV5(t, c, 1, "a/b")
		if ack := readPacket(t, r, 5); ack.FixedHeader.Type != packets.Suback {
			t.Fatalf("SUBACK: %+v", ack)
		}
		if err := s.Publish("a/b", make([]byte, 500), false, 1); err != nil {
			t.Fatal(err)
		}
		if err := s.Publish("a/b", []byte("small"), false, 1); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		b, err := r.Peek(1)
		cl, _ := s.Clients.Get("phone")
		if err != nil || len(b) == 0 {
			t.Fatalf("the small delivery never came (%v); inflight %d, held %d", err, cl.State.Inflight.Len(), cl.State.Inflight.Held())
		}
	})
}
