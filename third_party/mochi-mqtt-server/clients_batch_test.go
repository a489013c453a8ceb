// SPDX-License-Identifier: MIT
// SPDX-FileCopyrightText: 2023 mochi-mqtt, mochi-co

package mqtt

import (
	"bufio"
	"io"
	"net"
	"sync"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/mochi-mqtt/server/v2/system"
)

// countingConn counts the writes made to a connection.
type countingConn struct {
	net.Conn
	mu     sync.Mutex
	writes int
}

func (c *countingConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	c.writes++
	c.mu.Unlock()
	return c.Conn.Write(b)
}

// sentRecorder records what OnPacketSent reports.
type sentRecorder struct {
	HookBase
	mu     sync.Mutex
	sent   []packets.Packet
	size   []int
	record bool // keep what was sent (the benchmark does not)
}

func (h *sentRecorder) ID() string { return "sent-recorder" }
func (h *sentRecorder) Provides(b byte) bool {
	return b == OnPacketSent
}
func (h *sentRecorder) OnPacketSent(cl *Client, pk packets.Packet, b []byte) {
	if !h.record {
		return
	}
	h.mu.Lock()
	h.sent = append(h.sent, pk)
	h.size = append(h.size, len(b))
	h.mu.Unlock()
}

func batchTestClient(t testing.TB) (*Client, *countingConn, net.Conn, *sentRecorder, *system.Info) {
	t.Helper()
	server, peer := net.Pipe()
	t.Cleanup(func() { server.Close(); peer.Close() })
	cc := &countingConn{Conn: server}
	rec := &sentRecorder{record: true}
	hooks := new(Hooks)
	if err := hooks.Add(rec, nil); err != nil {
		t.Fatal(err)
	}
	info := new(system.Info)
	cl := newClient(cc, &ops{
		info:  info,
		hooks: hooks,
		log:   directTestLogger,
		options: &Options{
			Capabilities:             &Capabilities{MaximumClientWritesPending: 4},
			ClientNetWriteBufferSize: 2048,
		},
	})
	cl.ID = "batch"
	cl.Properties.ProtocolVersion = 5
	return cl, cc, peer, rec, info
}

func puback(id uint16, reason byte) packets.Packet {
	return packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: id, ReasonCode: reason}
}

func TestWritePacketsOneWriteInOrder(t *testing.T) {
	cl, cc, peer, rec, info := batchTestClient(t)
	pks := []packets.Packet{puback(1, 0), puback(2, packets.ErrNotAuthorized.Code), puback(3, 0), puback(4, 0)}
	pks[1].Properties.ReasonString = "not yours"

	got := make(chan []packets.Packet, 1)
	go func() {
		r := bufio.NewReader(peer)
		var out []packets.Packet
		for range pks {
			fh := new(packets.FixedHeader)
			b, err := r.ReadByte()
			if err != nil {
				break
			}
			if err := fh.Decode(b); err != nil {
				break
			}
			n, _, err := packets.DecodeLength(r)
			if err != nil {
				break
			}
			body := make([]byte, n)
			if _, err := io.ReadFull(r, body); err != nil {
				break
			}
			fh.Remaining = n
			pk := packets.Packet{FixedHeader: *fh, ProtocolVersion: 5}
			if err := pk.PubackDecode(body); err != nil {
				break
			}
			out = append(out, pk)
		}
		got <- out
	}()

	if err := cl.WritePackets(pks); err != nil {
		t.Fatal(err)
	}
	out := <-got
	if len(out) != len(pks) {
		t.Fatalf("peer read %d packets, want %d", len(out), len(pks))
	}
	for i, pk := range out {
		if pk.PacketID != pks[i].PacketID || pk.ReasonCode != pks[i].ReasonCode {
			t.Fatalf("packet %d: id %d reason %#x, want id %d reason %#x", i, pk.PacketID, pk.ReasonCode, pks[i].PacketID, pks[i].ReasonCode)
		}
	}
	if out[1].Properties.ReasonString != "not yours" {
		t.Fatalf("reason string %q lost", out[1].Properties.ReasonString)
	}
	if cc.writes != 1 {
		t.Fatalf("%d writes to the connection, want 1", cc.writes)
	}
	if info.PacketsSent != int64(len(pks)) {
		t.Fatalf("PacketsSent %d, want %d", info.PacketsSent, len(pks))
	}
	var total int
	for i, pk := range rec.sent {
		if pk.PacketID != pks[i].PacketID {
			t.Fatalf("OnPacketSent %d: packet %d, want %d", i, pk.PacketID, pks[i].PacketID)
		}
		total += rec.size[i]
	}
	if len(rec.sent) != len(pks) || int64(total) != info.BytesSent {
		t.Fatalf("OnPacketSent saw %d packets and %d bytes, want %d packets and %d bytes", len(rec.sent), total, len(pks), info.BytesSent)
	}
}

func TestWritePacketsNothingWrittenWhenOneCannotBeEncoded(t *testing.T) {
	cl, cc, peer, rec, _ := batchTestClient(t)
	go func() { _, _ = io.Copy(io.Discard, peer) }() // a write must not hang the test
	tooBig := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish},
		TopicName:   "a/b",
		Payload:     make([]byte, 100),
		Mods:        packets.Mods{MaxSize: 16}, // the client's maximum packet size
	}
	if err := cl.WritePackets([]packets.Packet{puback(1, 0), tooBig}); err == nil {
		t.Fatal("WritePackets with an oversized packet succeeded")
	}
	if cc.writes != 0 || len(rec.sent) != 0 {
		t.Fatalf("%d writes and %d packets reported sent after a refused batch, want none", cc.writes, len(rec.sent))
	}
}

func TestWritePacketsClosedClient(t *testing.T) {
	cl, cc, _, _, _ := batchTestClient(t)
	cl.Stop(nil)
	if err := cl.WritePackets([]packets.Packet{puback(1, 0), puback(2, 0)}); err != ErrConnectionClosed {
		t.Fatalf("WritePackets on a closed client: %v, want ErrConnectionClosed", err)
	}
	if cc.writes != 0 {
		t.Fatalf("%d writes on a closed client", cc.writes)
	}
}

// BenchmarkWritePackets writes batches of four PUBACKs, as a durable
// publisher with four in flight gets them, with a hook that sees each.
func BenchmarkWritePackets(b *testing.B) {
	cl, _, peer, rec, _ := batchTestClient(b)
	rec.record = false
	go func() { _, _ = io.Copy(io.Discard, peer) }()
	pks := []packets.Packet{puback(1, 0), puback(2, 0), puback(3, 0), puback(4, 0)}
	b.ReportAllocs()
	for b.Loop() {
		if err := cl.WritePackets(pks); err != nil {
			b.Fatal(err)
		}
	}
}
