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

// A will's delay never outlasts its session: the will is published when
// the delay passes or the session ends, whichever comes first
// (MQTT 5 3.1.3.2.2). A client that sets no Session Expiry Interval (0:
// its session ends with the connection) gets its will at once; and a
// retained will published as its session expires is retained, whichever
// of the two once-a-second sweeps comes first. Before, the first waited
// out the whole delay, and the second was published but not retained
// when the session had left the client map (a retained "offline" status
// never replaced the retained "online").
func TestWillDelayBoundedByTheSession(t *testing.T) {
	start := func(t *testing.T) (*Server, string) {
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
	connect := func(t *testing.T, addr string, expiry uint32) net.Conn {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		_ = c.SetReadDeadline(time.Now().Add(15 * time.Second))
		writeV5(t, c, packets.Packet{
			FixedHeader: packets.FixedHeader{Type: packets.Connect},
			Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 60, ClientIdentifier: "dev",
				WillFlag: true, WillRetain: true, WillTopic: "status/dev", WillPayload: []byte("offline"),
				WillProperties: packets.Properties{WillDelayInterval: 30}},
			Properties: packets.Properties{SessionExpiryInterval: expiry, SessionExpiryIntervalFlag: expiry > 0},
		})
		if ack := readPacket(t, bufio.NewReader(c), 5); ack.FixedHeader.Type != packets.Connack || ack.ReasonCode != 0 {
			t.Fatalf("CONNACK: %+v", ack)
		}
		return c
	}
	retained := func(s *Server) string {
		pk, ok := s.Topics.Retained.Get("status/dev")
		if !ok {
			return ""
		}
		return string(pk.Payload)
	}

	t.Run("no session expiry", func(t *testing.T) {
		s, addr := start(t)
		c := connect(t, addr, 0)
		_ = c.Close()
		// The session ends with the connection: out of the client map
		// after the will was handled.
		waitUntil(t, "the session ended", func() bool { _, ok := s.Clients.Get("dev"); return !ok })
		if got := retained(s); got != "offline" {
			t.Fatalf("retained %q once the session ended, want the will", got)
		}
	})
	t.Run("session expires first", func(t *testing.T) {
		s, addr := start(t)
		c := connect(t, addr, 10)
		cl, _ := s.Clients.Get("dev")
		_ = c.Close()
		waitUntil(t, "the connection ended", cl.Closed)
		later := time.Now().Unix() + 3600
		s.clearExpiredClients(later)
		s.sendDelayedLWT(later)
		if got := retained(s); got != "offline" {
			t.Fatalf("retained %q after the session expired, want the will", got)
		}
	})
}

// A clean start ends the session it replaces [MQTT-3.1.2-4], and a will
// waits for its delay or the end of its session, whichever comes first:
// a connection that starts clean with the client identifier of a session
// whose will is delayed has that will published at once, whether the old
// connection ended before (the will scheduled) or is taken over (its end
// comes after the new CONNACK). Before, the first will was dropped and
// the second published only when the delay ran out.
func TestCleanStartPublishesTheDelayedWill(t *testing.T) {
	for _, takeover := range []bool{false, true} {
		t.Run(fmt.Sprintf("takeover=%v", takeover), func(t *testing.T) {
			hook := &willGateHook{entered: make(chan struct{}), release: make(chan struct{}),
				established: make(chan *Client, 4), ended: make(chan struct{})}
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

			w, wr, _ := connectAliases(t, ln.Address(), "watcher", 0, 0)
			<-hook.established
			subscribeV5(t, w, 1, "will/#")
			if ack := readPacket(t, wr, 5); ack.FixedHeader.Type != packets.Suback {
				t.Fatalf("SUBACK: %+v", ack)
			}
			c, _ := connectWithWill(t, ln.Address(), "dev", false, 60)
			old := <-hook.established
			if takeover {
				hook.mu.Lock()
				hook.gate = old
				hook.mu.Unlock()
				connectWithWill(t, ln.Address(), "dev", true, 60)
				<-hook.entered
				<-hook.established
				close(hook.release)
			} else {
				_ = c.Close()
				waitUntil(t, "the will scheduled", func() bool { _, ok := s.loop.willDelayed.Get("dev"); return ok })
				connectWithWill(t, ln.Address(), "dev", true, 60)
			}
			if got := readPacket(t, wr, 5); got.TopicName != "will/dev" || string(got.Payload) != "gone" {
				t.Fatalf("watcher got %q on %q, want the will", got.Payload, got.TopicName)
			}
		})
	}
}
