// SPDX-License-Identifier: MIT

//go:build unix

package mqtt

import (
	"bufio"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

// willGateHook holds the will of one client object in OnWill until
// released, and reports when a session is established.
type willGateHook struct {
	HookBase
	mu          sync.Mutex
	gate        *Client
	entered     chan struct{}
	release     chan struct{}
	established chan *Client
	enteredOnce sync.Once
	ended       chan struct{} // closed at the gated client's OnDisconnect
}

func (h *willGateHook) ID() string { return "will-gate" }
func (h *willGateHook) Provides(b byte) bool {
	return b == OnConnectAuthenticate || b == OnACLCheck || b == OnWill || b == OnSessionEstablished || b == OnDisconnect
}

// OnDisconnect comes after the client's will was handled (sendLWT).
func (h *willGateHook) OnDisconnect(cl *Client, _ error, _ bool) {
	h.mu.Lock()
	gated := cl == h.gate
	h.mu.Unlock()
	if gated {
		close(h.ended)
	}
}
func (h *willGateHook) OnConnectAuthenticate(*Client, packets.Packet) bool { return true }
func (h *willGateHook) OnACLCheck(*Client, string, bool) bool              { return true }
func (h *willGateHook) OnSessionEstablished(cl *Client, _ packets.Packet) {
	h.established <- cl
}

func (h *willGateHook) OnWill(cl *Client, will Will) (Will, error) {
	h.mu.Lock()
	gated := cl == h.gate
	h.mu.Unlock()
	if gated {
		h.enteredOnce.Do(func() { close(h.entered) })
		<-h.release
	}
	return will, nil
}

// connectWithWill connects id (MQTT 5) with a will on topic "will/"+id
// delayed by delay seconds; clean asks for a clean start.
func connectWithWill(t *testing.T, addr, id string, clean bool, delay uint32) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetReadDeadline(time.Now().Add(15 * time.Second))
	writeV5(t, c, packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Connect},
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: clean, Keepalive: 60, ClientIdentifier: id,
			WillFlag: true, WillTopic: "will/" + id, WillPayload: []byte("gone"),
			WillProperties: packets.Properties{WillDelayInterval: delay}},
		Properties: packets.Properties{SessionExpiryInterval: 600, SessionExpiryIntervalFlag: true},
	})
	r := bufio.NewReader(c)
	if ack := readPacket(t, r, 5); ack.FixedHeader.Type != packets.Connack || ack.ReasonCode != 0 {
		t.Fatalf("CONNACK: %+v", ack)
	}
	return c, r
}

// A connection that takes its session over (clean start 0) before the old
// connection's will delay has passed cancels that will [MQTT-3.1.3-9],
// also when the old connection's end, which schedules the will, comes
// after the new connection's CONNACK (the old connection's reader runs on
// its own goroutine). Before, the will was scheduled after the new
// connection had cancelled it, and published after the delay while the
// client was connected.
func TestTakeoverCancelsADelayedWillScheduledLate(t *testing.T) {
	hook := &willGateHook{entered: make(chan struct{}), release: make(chan struct{}), established: make(chan *Client, 4), ended: make(chan struct{})}
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

	connectWithWill(t, ln.Address(), "dev", false, 60)
	old := <-hook.established
	hook.mu.Lock()
	hook.gate = old
	hook.mu.Unlock()

	connectWithWill(t, ln.Address(), "dev", false, 60) // takes the session over
	<-hook.entered                                     // the old connection's end is scheduling its will
	<-hook.established                                 // the new connection is done (the will cancelled)
	close(hook.release)
	<-hook.ended
	if _, ok := s.loop.willDelayed.Get("dev"); ok {
		t.Fatal("the will of the taken-over connection is scheduled while the client is connected")
	}
}
