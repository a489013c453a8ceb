// SPDX-License-Identifier: MIT
// SPDX-FileCopyrightText: 2023 mochi-mqtt, mochi-co

//go:build unix

package mqtt

import (
	"io"
	"log/slog"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// An expiring client whose session is ending while a new connection with
// its ID takes it over must not end the new client's session: the new
// client stays in the client map with its subscription, and a publish
// reaches it. Before the fix, the old client passed the "not taken over"
// check, the takeover completed meanwhile, and the old client's cleanup
// then deleted the new client from the map: connected and subscribed, it
// received nothing.
func TestSessionEndRacingATakeoverKeepsTheNewClient(t *testing.T) {
	s := New(&Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	hook := &gateUnsubscribedHook{release: make(chan struct{}), entered: make(chan struct{})}
	if err := s.AddHook(hook, nil); err != nil {
		t.Fatal(err)
	}
	newConn := func() net.Conn {
		a, b := net.Pipe()
		go func() { _, _ = io.Copy(io.Discard, b) }()
		t.Cleanup(func() { a.Close(); b.Close() })
		return a
	}
	sub := packets.Subscription{Filter: "a/b", Qos: 0}
	subscribe := func(cl *Client) {
		cl.State.Subscriptions.Add(sub.Filter, sub)
		s.Topics.Subscribe(cl.ID, sub)
	}

	old := s.NewClient(newConn(), "tcp", "phone", false)
	old.Properties.ProtocolVersion = 5 // session expiry 0: the session ends with the connection
	s.Clients.Add(old)
	subscribe(old)
	hook.gate = old

	// The old connection drops; its cleanup stops in OnUnsubscribed, after
	// it decided the session ends and before it leaves the client map.
	oldDone := make(chan struct{})
	go func() {
		defer close(oldDone)
		s.clientDisconnected(old, "tcp", io.EOF)
	}()
	<-hook.entered

	// A new connection with the same ID and clean start takes over.
	nw := s.NewClient(newConn(), "tcp", "phone", false)
	nw.Properties.ProtocolVersion = 5
	newDone := make(chan struct{})
	go func() {
		defer close(newDone)
		s.inheritClientSession(packets.Packet{Connect: packets.ConnectParams{Clean: true}}, nw)
		s.Clients.Add(nw)
		subscribe(nw)
	}()
	// With the fix the takeover waits for the old session to end; without
	// it, it completes first. Either way, let the old cleanup go on after a
	// moment (this bounds the wait, it asserts nothing about time).
	select {
	case <-newDone:
	case <-time.After(300 * time.Millisecond):
	}
	close(hook.release)
	<-oldDone
	<-newDone

	if got, ok := s.Clients.Get("phone"); !ok || got != nw {
		t.Fatalf("client map holds %p (present %v), want the new client %p", got, ok, nw)
	}
	if subs := s.Topics.Subscribers("a/b"); len(subs.Subscriptions) != 1 {
		t.Fatalf("%d subscriptions to a/b, want the new client's", len(subs.Subscriptions))
	}
}

// gateUnsubscribedHook blocks the first OnUnsubscribed of gate until
// release is closed.
type gateUnsubscribedHook struct {
	HookBase
	gate    *Client
	gated   atomic.Bool
	entered chan struct{}
	release chan struct{}
}

func (h *gateUnsubscribedHook) ID() string { return "gate-unsubscribed" }
func (h *gateUnsubscribedHook) Provides(b byte) bool {
	return b == OnUnsubscribed || b == OnACLCheck
}
func (h *gateUnsubscribedHook) OnACLCheck(*Client, string, bool) bool { return true }
func (h *gateUnsubscribedHook) OnUnsubscribed(cl *Client, _ packets.Packet) {
	if cl != h.gate {
		return
	}
	if h.gated.CompareAndSwap(false, true) { // not a sync.Once: later calls must not wait
		close(h.entered)
		<-h.release
	}
}
