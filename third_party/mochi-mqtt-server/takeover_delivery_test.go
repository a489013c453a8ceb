// SPDX-License-Identifier: MIT

//go:build unix

package mqtt

import (
	"bufio"
	"bytes"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

// gateDeliveryHook holds deliveries to one client object (read ACL
// checks of gate) until released, and reports when a client with the
// same ID but another object has established its session.
type gateDeliveryHook struct {
	HookBase
	mu                          sync.Mutex
	gate                        *Client
	entered, release, takenOver chan struct{}
	enteredOnce, takenOnce      sync.Once
	// when set, the new client's CONNACK waits in OnPacketEncode: encoding
	// is closed when it gets there, and it goes on when resume is closed
	encoding, resume chan struct{}
}

func (h *gateDeliveryHook) ID() string { return "gate-delivery" }
func (h *gateDeliveryHook) Provides(b byte) bool {
	return b == OnACLCheck || b == OnConnectAuthenticate || b == OnSessionEstablished || b == OnPacketEncode
}

func (h *gateDeliveryHook) OnPacketEncode(cl *Client, pk packets.Packet) packets.Packet {
	h.mu.Lock()
	held := h.encoding != nil && pk.FixedHeader.Type == packets.Connack && h.gate != nil && cl != h.gate && cl.ID == h.gate.ID
	h.mu.Unlock()
	if held {
		close(h.encoding)
		<-h.resume
	}
	return pk
}
func (h *gateDeliveryHook) OnConnectAuthenticate(*Client, packets.Packet) bool { return true }

func (h *gateDeliveryHook) OnACLCheck(cl *Client, _ string, write bool) bool {
	h.mu.Lock()
	gated := !write && cl == h.gate
	h.mu.Unlock()
	if gated {
		h.enteredOnce.Do(func() { close(h.entered) })
		<-h.release
	}
	return true
}

func (h *gateDeliveryHook) OnSessionEstablished(cl *Client, _ packets.Packet) {
	h.mu.Lock()
	taken := h.gate != nil && cl != h.gate && cl.ID == h.gate.ID
	h.mu.Unlock()
	if taken {
		h.takenOnce.Do(func() { close(h.takenOver) })
	}
}

// connectV5 opens an MQTT 5 connection with a persistent session and
// returns it after the CONNACK, with its session-present flag.
func connectV5(t *testing.T, addr, id string) (net.Conn, *bufio.Reader, bool) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetReadDeadline(time.Now().Add(15 * time.Second))
	pk := packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Connect},
		ProtocolVersion: 5,
		Connect:         packets.ConnectParams{ProtocolName: []byte("MQTT"), Keepalive: 60, ClientIdentifier: id},
		Properties:      packets.Properties{SessionExpiryInterval: 600, SessionExpiryIntervalFlag: true},
	}
	var buf bytes.Buffer
	if err := pk.ConnectEncode(&buf); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(buf.Bytes()); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(c)
	ack := readPacket(t, r, 5)
	if ack.FixedHeader.Type != packets.Connack || ack.ReasonCode != 0 {
		t.Fatalf("CONNACK: %+v", ack)
	}
	return c, r, ack.SessionPresent
}

func readPacket(t *testing.T, r *bufio.Reader, version byte) packets.Packet {
	t.Helper()
	b, err := r.ReadByte()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	var pk packets.Packet
	pk.ProtocolVersion = version
	if err := pk.FixedHeader.Decode(b); err != nil {
		t.Fatal(err)
	}
	n, _, err := packets.DecodeLength(r)
	if err != nil {
		t.Fatal(err)
	}
	pk.FixedHeader.Remaining = n
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		t.Fatal(err)
	}
	switch pk.FixedHeader.Type {
	case packets.Connack:
		err = pk.ConnackDecode(body)
	case packets.Suback:
		err = pk.SubackDecode(body)
	case packets.Publish:
		err = pk.PublishDecode(body)
	case packets.Puback:
		err = pk.PubackDecode(body)
	case packets.Pubrec:
		err = pk.PubrecDecode(body)
	case packets.Pubrel:
		err = pk.PubrelDecode(body)
	case packets.Pubcomp:
		err = pk.PubcompDecode(body)
	case packets.Disconnect:
		err = pk.DisconnectDecode(body)
	}
	if err != nil {
		t.Fatal(err)
	}
	return pk
}

// A QoS 1 message on its way to a session while a new connection takes
// the session over reaches the new connection, after its CONNACK. The
// delivery looked up the old client object and is held until the
// takeover is complete (CONNACK sent, inflight messages resent, session
// established), or until the new client's CONNACK is about to be written
// (it then goes to the new client, which must not write it before the
// CONNACK). Before the fix it was stored in the old client's inflight
// messages, which nothing sends again, and the session lost it.
func TestDeliveryDuringATakeoverReachesTheNewConnection(t *testing.T) {
	for _, during := range []bool{false, true} {
		name := "after the takeover"
		if during {
			name = "during the handshake"
		}
		t.Run(name, func(t *testing.T) { testDeliveryDuringATakeover(t, during) })
	}
}

func testDeliveryDuringATakeover(t *testing.T, duringHandshake bool) {
	hook := &gateDeliveryHook{entered: make(chan struct{}), release: make(chan struct{}), takenOver: make(chan struct{})}
	s := New(&Options{InlineClient: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err := s.AddHook(hook, nil); err != nil {
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

	first, fr, _ := connectV5(t, ln.Address(), "phone")
	subscribeV5(t, first, 1, "a/b")
	if ack := readPacket(t, fr, 5); ack.FixedHeader.Type != packets.Suback {
		t.Fatalf("SUBACK: %+v", ack)
	}
	old, ok := s.Clients.Get("phone")
	if !ok {
		t.Fatal("no client phone")
	}
	hook.mu.Lock()
	hook.gate = old
	if duringHandshake {
		hook.encoding, hook.resume = make(chan struct{}), make(chan struct{})
	}
	hook.mu.Unlock()
	_ = first.Close()
	waitUntil(t, "the first connection ended", old.Closed)

	published := make(chan error, 1)
	go func() { published <- s.Publish("a/b", []byte("while moving"), false, 1) }()
	<-hook.entered

	var pubErr error
	if duringHandshake {
		go func() {
			<-hook.encoding
			close(hook.release)
			pubErr = <-published
			close(hook.resume)
		}()
	}
	second, sr, present := connectV5(t, ln.Address(), "phone")
	if !present {
		t.Fatal("session not present")
	}
	if !duringHandshake {
		<-hook.takenOver
		close(hook.release)
		pubErr = <-published
	}
	if pubErr != nil {
		t.Fatal(pubErr)
	}
	_ = second.SetReadDeadline(time.Now().Add(5 * time.Second))
	pk := readPacket(t, sr, 5)
	if pk.FixedHeader.Type != packets.Publish || string(pk.Payload) != "while moving" {
		t.Fatalf("got %+v, want the publish", pk)
	}
}
