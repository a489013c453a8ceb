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
	"sync/atomic"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

// A client with a Receive Maximum of 1 acknowledges each delivery while
// the next is published: the PUBACK, freeing the quota, races the
// publisher deciding whether to hold its delivery back. A publisher
// that read no quota, then took the quota the PUBACK freed (which had
// found nothing held back to send) and held its delivery back left it
// waiting, with no quota, until the client reconnected. A hook that
// takes its time over each new inflight delivery widens the window.
func TestDeliveryPublishedAsTheLastIsAcknowledged(t *testing.T) {
	s, addr := startHeldServer(t)
	if err := s.AddHook(new(slowQosPublish), nil); err != nil {
		t.Fatal(err)
	}
	c, r := connectReceiveMax(t, addr, "phone", 1)
	subscribeV5(t, c, 1, "a/b")
	if ack := readPacket(t, r, 5); ack.FixedHeader.Type != packets.Suback {
		t.Fatalf("SUBACK: %+v", ack)
	}
	if err := s.Publish("a/b", []byte("0"), false, 1); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 500; i++ {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		pk := readPacket(t, r, 5) // fails the test if the delivery stays held back
		if pk.FixedHeader.Type != packets.Publish || string(pk.Payload) != fmt.Sprint(i) {
			t.Fatalf("got %+v, want delivery %d", pk, i)
		}
		writeV5(t, c, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID})
		if err := s.Publish("a/b", []byte(fmt.Sprint(i+1)), false, 1); err != nil {
			t.Fatal(err)
		}
	}
}

// slowQosPublish takes a moment over each delivery stored inflight.
type slowQosPublish struct{ HookBase }

func (h *slowQosPublish) ID() string           { return "slow-qos-publish" }
func (h *slowQosPublish) Provides(b byte) bool { return b == OnQosPublish }
func (h *slowQosPublish) OnQosPublish(*Client, packets.Packet, int64, int) {
	time.Sleep(200 * time.Microsecond)
}

func startHeldServer(t *testing.T) (*Server, string) {
	t.Helper()
	s := New(&Options{InlineClient: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err := s.AddHook(new(allowAll), nil); err != nil {
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
	return s, ln.Address()
}

// Deliveries from several publishers at once to a client with a Receive
// Maximum of 1 that acknowledges each as it arrives: every one arrives,
// once, and none is left waiting for quota. A publisher that found no
// quota and marked its delivery held back after a PUBACK had freed the
// quota (and looked for held deliveries) left it waiting until the
// client reconnected.
func TestHeldBackDeliveriesWithConcurrentPublishersAndAcknowledgements(t *testing.T) {
	s, addr := startHeldServer(t)
	const publishers, each = 4, 500
	c, r := connectReceiveMax(t, addr, "phone", 1)
	subscribeV5(t, c, 1, "a/b")
	if ack := readPacket(t, r, 5); ack.FixedHeader.Type != packets.Suback {
		t.Fatalf("SUBACK: %+v", ack)
	}

	var wg sync.WaitGroup
	var failed atomic.Value
	for p := 0; p < publishers; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				if err := s.Publish("a/b", []byte(fmt.Sprintf("%d-%d", p, i)), false, 1); err != nil {
					failed.Store(err)
					return
				}
			}
		}()
	}

	seen := map[string]bool{}
	for len(seen) < publishers*each {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		pk := readPacket(t, r, 5) // fails the test if a delivery stays held back
		if pk.FixedHeader.Type != packets.Publish {
			t.Fatalf("got %+v, want a delivery", pk)
		}
		if seen[string(pk.Payload)] {
			t.Fatalf("delivery %s twice", pk.Payload)
		}
		seen[string(pk.Payload)] = true
		writeV5(t, c, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID})
	}
	wg.Wait()
	if err := failed.Load(); err != nil {
		t.Fatal(err)
	}
	cl, ok := s.Clients.Get("phone")
	if !ok {
		t.Fatal("no client phone")
	}
	waitUntil(t, "every delivery acknowledged", func() bool { return cl.State.Inflight.Len() == 0 })
	if q := atomic.LoadInt32(&cl.State.Inflight.sendQuota); q != 1 {
		t.Fatalf("send quota %d after every PUBACK, want 1", q)
	}
	if h := cl.State.Inflight.Held(); h != 0 {
		t.Fatalf("%d held back after every PUBACK, want 0", h)
	}
}

// After a reconnection the session's unacknowledged delivery is resent
// and takes the client's one slot again; those held back go out one per
// PUBACK, each once. All of them were resent at once, over the client's
// Receive Maximum, and then sent again as PUBACKs freed the quota.
func TestHeldBackDeliveriesAfterAReconnection(t *testing.T) {
	s, addr := startHeldServer(t)
	c, r := connectReceiveMax(t, addr, "phone", 1)
	subscribeV5(t, c, 1, "a/b")
	if ack := readPacket(t, r, 5); ack.FixedHeader.Type != packets.Suback {
		t.Fatalf("SUBACK: %+v", ack)
	}
	for i := 0; i < 3; i++ {
		if err := s.Publish("a/b", []byte(fmt.Sprint(i)), false, 1); err != nil {
			t.Fatal(err)
		}
	}
	if pk := readPacket(t, r, 5); pk.FixedHeader.Type != packets.Publish || string(pk.Payload) != "0" {
		t.Fatalf("got %+v, want delivery 0", pk)
	}
	old, ok := s.Clients.Get("phone")
	if !ok {
		t.Fatal("no client phone")
	}
	_ = c.Close()
	waitUntil(t, "the connection ended", old.Closed)

	c2, r2 := connectReceiveMax(t, addr, "phone", 1)
	defer c2.Close()
	for i := 0; i < 3; i++ {
		_ = c2.SetReadDeadline(time.Now().Add(5 * time.Second))
		pk := readPacket(t, r2, 5)
		if pk.FixedHeader.Type != packets.Publish || string(pk.Payload) != fmt.Sprint(i) {
			t.Fatalf("got %+v, want delivery %d", pk, i)
		}
		if i == 0 && !pk.FixedHeader.Dup {
			t.Fatal("delivery 0 resent without DUP")
		}
		// Nothing more may come before this PUBACK: the slot is taken.
		_ = c2.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if _, err := r2.Peek(1); err == nil {
			t.Fatalf("a packet after delivery %d before its PUBACK (Receive Maximum 1)", i)
		}
		writeV5(t, c2, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID})
	}
	cl, _ := s.Clients.Get("phone")
	waitUntil(t, "every delivery acknowledged", func() bool { return cl.State.Inflight.Len() == 0 })
	if q := atomic.LoadInt32(&cl.State.Inflight.sendQuota); q != 1 {
		t.Fatalf("send quota %d after every PUBACK, want 1", q)
	}
}

// Deliveries held back by a Receive Maximum of 2 while the client's
// connection drops again and again (its session kept): every message
// arrives, and only those unacknowledged at a drop come again. Every held
// delivery was resent at each reconnection, over the Receive Maximum,
// and then sent once more as PUBACKs freed the quota: 11,053–17,574
// deliveries for these 1,200 messages.
func TestHeldBackDeliveriesAcrossManyReconnections(t *testing.T) {
	s, addr := startHeldServer(t)
	const publishers, each = 4, 300
	c, r := connectReceiveMax(t, addr, "phone", 2)
	subscribeV5(t, c, 1, "a/b")
	if ack := readPacket(t, r, 5); ack.FixedHeader.Type != packets.Suback {
		t.Fatalf("SUBACK: %+v", ack)
	}
	var wg sync.WaitGroup
	for p := 0; p < publishers; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				_ = s.Publish("a/b", []byte(fmt.Sprintf("%d-%d", p, i)), false, 1)
				if i%50 == 0 {
					time.Sleep(time.Millisecond)
				}
			}
		}()
	}
	seen := map[string]int{}
	got, reconnections := 0, 0
	for len(seen) < publishers*each {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		pk := readPacket(t, r, 5)
		if pk.FixedHeader.Type != packets.Publish {
			t.Fatalf("got %+v", pk)
		}
		seen[string(pk.Payload)]++
		got++
		if got%97 == 0 {
			// The connection drops before this PUBACK: the session
			// resends what was unacknowledged, nothing more.
			reconnections++
			_ = c.Close()
			old, _ := s.Clients.Get("phone")
			waitUntil(t, "closed", old.Closed)
			c, r = connectReceiveMax(t, addr, "phone", 2)
			continue
		}
		writeV5(t, c, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID})
	}
	wg.Wait()
	// At most the client's Receive Maximum (2) unacknowledged at each
	// drop comes again.
	if again := got - len(seen); again > 2*reconnections {
		t.Fatalf("%d deliveries for %d messages over %d reconnections: %d sent again, want at most %d",
			got, len(seen), reconnections, again, 2*reconnections)
	}
	cl, _ := s.Clients.Get("phone")
	waitUntil(t, "drained", func() bool { return cl.State.Inflight.Len() == 0 })
}

// Deliveries made while a reconnecting client's CONNACK is on its way
// wait for the quota its Receive Maximum leaves after the session's
// unacknowledged delivery is resent: one at a time with a Receive
// Maximum of 1. They took the quota the takeover had reset to the whole
// Receive Maximum, and the handshake's end resent them with the
// session's: two deliveries unacknowledged against a maximum of 1.
func TestDeliveriesDuringTheHandshakeWaitForTheQuota(t *testing.T) {
	s := New(&Options{InlineClient: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	h := &gateDeliveryHook{entered: make(chan struct{}), release: make(chan struct{}), takenOver: make(chan struct{})}
	if err := s.AddHook(h, nil); err != nil {
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

	c, r := connectReceiveMax(t, ln.Address(), "phone", 1)
	subscribeV5(t, c, 1, "a/b")
	if ack := readPacket(t, r, 5); ack.FixedHeader.Type != packets.Suback {
		t.Fatalf("SUBACK: %+v", ack)
	}
	if err := s.Publish("a/b", []byte("0"), false, 1); err != nil {
		t.Fatal(err)
	}
	if pk := readPacket(t, r, 5); string(pk.Payload) != "0" {
		t.Fatalf("got %+v, want delivery 0", pk)
	}
	old, _ := s.Clients.Get("phone")
	_ = c.Close()
	waitUntil(t, "the connection ended", old.Closed)

	// The new connection's CONNACK waits in OnPacketEncode while 1 and 2
	// are published.
	h.mu.Lock()
	h.gate, h.encoding, h.resume = old, make(chan struct{}), make(chan struct{})
	encoding, resume := h.encoding, h.resume
	h.mu.Unlock()
	type conn struct {
		c net.Conn
		r *bufio.Reader
	}
	connected := make(chan conn, 1)
	go func() {
		c2, r2 := connectReceiveMax(t, ln.Address(), "phone", 1)
		connected <- conn{c2, r2}
	}()
	select {
	case <-encoding:
	case <-time.After(10 * time.Second):
		t.Fatal("the CONNACK never got to its encoding")
	}
	for _, m := range []string{"1", "2"} {
		if err := s.Publish("a/b", []byte(m), false, 1); err != nil {
			t.Fatal(err)
		}
	}
	close(resume)
	cn := <-connected
	defer cn.c.Close()
	for i := 0; i < 3; i++ {
		_ = cn.c.SetReadDeadline(time.Now().Add(5 * time.Second))
		pk := readPacket(t, cn.r, 5)
		if pk.FixedHeader.Type != packets.Publish || string(pk.Payload) != fmt.Sprint(i) {
			t.Fatalf("got %+v, want delivery %d", pk, i)
		}
		_ = cn.c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if _, err := cn.r.Peek(1); err == nil {
			t.Fatalf("a packet after delivery %d before its PUBACK (Receive Maximum 1)", i)
		}
		writeV5(t, cn.c, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID})
	}
}
