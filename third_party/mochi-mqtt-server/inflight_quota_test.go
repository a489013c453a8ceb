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

	"github.com/mochi-mqtt/server/v2/packets"
)

// Deliveries held back by the client's receive maximum go out one per
// PUBACK, and each gives its quota back with its own PUBACK: after every
// PUBACK nothing is left inflight and the quota is whole again.
func TestHeldBackDeliveriesGiveTheQuotaBack(t *testing.T) {
	s := New(&Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err := s.AddHook(new(allowQuotaHook), nil); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	peer, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c, err := ln.Accept()
	ln.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); peer.Close() })
	go func() { _, _ = io.Copy(io.Discard, peer) }()
	cl := s.NewClient(c, "tcp", "sub", false)
	cl.Properties.ProtocolVersion = 5
	cl.State.Inflight.ResetSendQuota(1) // the client's Receive Maximum
	s.Clients.Add(cl)

	sub := packets.Subscription{Filter: "a/b", Qos: 1}
	var ids []uint16
	for i := 0; i < 3; i++ {
		out, err := s.publishToClient(cl, sub, packets.Packet{
			FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1},
			TopicName:   "a/b",
			Payload:     []byte("x"),
		})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, out.PacketID)
	}
	if n := cl.State.Inflight.Len(); n != 3 {
		t.Fatalf("%d inflight after 3 deliveries with a quota of 1, want 3", n)
	}
	for i, id := range ids {
		if err := s.processPacket(cl, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: id, ProtocolVersion: 5}); err != nil {
			t.Fatal(err)
		}
		if left := cl.State.Inflight.Len(); left != len(ids)-i-1 {
			t.Fatalf("after the PUBACK of delivery %d: %d inflight, want %d", i, left, len(ids)-i-1)
		}
	}
	if q := atomic.LoadInt32(&cl.State.Inflight.sendQuota); q != 1 {
		t.Fatalf("send quota %d after every PUBACK, want 1", q)
	}
}

// allowQuotaHook allows every delivery.
type allowQuotaHook struct{ HookBase }

func (h *allowQuotaHook) ID() string                            { return "allow-quota" }
func (h *allowQuotaHook) Provides(b byte) bool                  { return b == OnACLCheck }
func (h *allowQuotaHook) OnACLCheck(*Client, string, bool) bool { return true }
