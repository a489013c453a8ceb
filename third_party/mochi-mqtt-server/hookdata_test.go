// SPDX-License-Identifier: MIT
// SPDX-FileCopyrightText: 2023 mochi-mqtt, mochi-co

package mqtt

import (
	"io"
	"log/slog"
	"net"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
)

// Client.HookData belongs to the hooks: a client that takes a session over
// (clean start or not) starts without the old client's, and the old
// client's stays as the hook left it.
func TestHookDataNotCarriedOverByATakeover(t *testing.T) {
	s := New(&Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	newConn := func() net.Conn {
		a, b := net.Pipe()
		go func() { _, _ = io.Copy(io.Discard, b) }()
		t.Cleanup(func() { a.Close(); b.Close() })
		return a
	}
	for _, clean := range []bool{false, true} {
		old := s.NewClient(newConn(), "tcp", "phone", false)
		old.Properties.ProtocolVersion = 5
		old.Properties.Props.SessionExpiryInterval = 60
		old.HookData.Store("old connection")
		s.Clients.Add(old)

		nw := s.NewClient(newConn(), "tcp", "phone", false)
		nw.Properties.ProtocolVersion = 5
		s.inheritClientSession(packets.Packet{Connect: packets.ConnectParams{Clean: clean}}, nw)
		if v := nw.HookData.Load(); v != nil {
			t.Fatalf("clean=%v: the new client has HookData %v", clean, v)
		}
		if v := old.HookData.Load(); v != "old connection" {
			t.Fatalf("clean=%v: the old client's HookData is %v", clean, v)
		}
		s.Clients.Delete("phone")
	}
}
