// SPDX-License-Identifier: MIT

//go:build unix

package mqtt

import (
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

// lostConnackHook holds the session establishment until released and
// reports the client's OnDisconnect.
type lostConnackHook struct {
	HookBase
	entered, release, disconnected chan struct{}
}

func (h *lostConnackHook) ID() string { return "lost-connack" }
func (h *lostConnackHook) Provides(b byte) bool {
	return b == OnConnectAuthenticate || b == OnACLCheck || b == OnSessionEstablish || b == OnDisconnect
}
func (h *lostConnackHook) OnConnectAuthenticate(*Client, packets.Packet) bool { return true }
func (h *lostConnackHook) OnACLCheck(*Client, string, bool) bool              { return true }
func (h *lostConnackHook) OnSessionEstablish(*Client, packets.Packet) {
	close(h.entered)
	<-h.release
}
func (h *lostConnackHook) OnDisconnect(*Client, error, bool) { close(h.disconnected) }

// A connection accepted by the hooks and lost before its CONNACK could
// be written ends as any connection does: OnDisconnect is called (hooks
// release what they keep per connection) and its clean session leaves
// the client map. Before, the handshake's failure ended it silently.
func TestConnectionLostBeforeItsConnackIsDisconnected(t *testing.T) {
	hook := &lostConnackHook{entered: make(chan struct{}), release: make(chan struct{}), disconnected: make(chan struct{})}
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

	c, err := net.Dial("tcp", ln.Address())
	if err != nil {
		t.Fatal(err)
	}
	writeV5(t, c, packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Connect},
		Connect:     packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 60, ClientIdentifier: "phone"},
	})
	<-hook.entered
	_ = c.(*net.TCPConn).SetLinger(0) // a reset: the CONNACK's write fails
	_ = c.Close()
	close(hook.release)
	select {
	case <-hook.disconnected:
	case <-time.After(15 * time.Second):
		t.Fatal("no OnDisconnect for a connection lost before its CONNACK")
	}
	waitUntil(t, "the clean session gone from the client map", func() bool {
		_, ok := s.Clients.Get("phone")
		return !ok
	})
}
