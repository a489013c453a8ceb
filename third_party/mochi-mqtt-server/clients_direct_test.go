// SPDX-License-Identifier: MIT
// SPDX-FileCopyrightText: 2023 mochi-mqtt, mochi-co

//go:build unix

package mqtt

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/mochi-mqtt/server/v2/system"
)

var directTestLogger = slog.New(slog.NewTextHandler(io.Discard, nil))

// directTestClient is a server-side client on a real TCP connection with
// direct writes on; peer is the other end.
func directTestClient(t testing.TB) (cl *Client, peer net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peer, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); peer.Close() })
	cl = newClient(c, &ops{
		info:  new(system.Info),
		hooks: new(Hooks),
		log:   directTestLogger,
		options: &Options{
			Capabilities:             &Capabilities{MaximumClientWritesPending: 4},
			ClientNetWriteBufferSize: 2048,
			ClientDirectWrites:       true,
		},
	})
	cl.ID = "direct"
	cl.Properties.ProtocolVersion = 4
	return cl, peer
}

func seqPublish(seq uint32, size int) packets.Packet {
	payload := make([]byte, size)
	binary.BigEndian.PutUint32(payload, seq)
	return packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: "a/b", Payload: payload}
}

// readSeqs reads n v3 QoS 0 PUBLISH packets for topic a/b and returns the
// sequence numbers at the start of their payloads.
func readSeqs(t *testing.T, r *bufio.Reader, n int) []uint32 {
	t.Helper()
	var seqs []uint32
	for len(seqs) < n {
		var fh packets.FixedHeader
		b, err := r.ReadByte()
		if err != nil {
			t.Fatal(err)
		}
		if err := fh.Decode(b); err != nil {
			t.Fatal(err)
		}
		rem, _, err := packets.DecodeLength(r)
		if err != nil {
			t.Fatal(err)
		}
		body := make([]byte, rem)
		if _, err := io.ReadFull(r, body); err != nil {
			t.Fatal(err)
		}
		if fh.Type != packets.Publish || !bytes.Equal(body[:5], []byte{0, 3, 'a', '/', 'b'}) {
			t.Fatalf("packet %d: type %d body %x", len(seqs), fh.Type, body[:min(8, len(body))])
		}
		seqs = append(seqs, binary.BigEndian.Uint32(body[5:]))
	}
	return seqs
}

func TestWriteDirect(t *testing.T) {
	cl, peer := directTestClient(t)
	if cl.Net.raw == nil {
		t.Fatal("no raw socket for a TCP connection")
	}
	if !cl.writeDirect(seqPublish(1, 16), nil) {
		t.Fatal("an idle client was not written directly")
	}
	if got := readSeqs(t, bufio.NewReader(peer), 1); got[0] != 1 {
		t.Fatalf("got %v", got)
	}
	if n := atomic.LoadInt64(&cl.ops.info.MessagesSent); n != 1 {
		t.Fatalf("MessagesSent %d", n)
	}

	// Something queued: the caller must queue too, behind it.
	cl.outboundQueue() <- new(packets.Packet)
	if cl.writeDirect(seqPublish(2, 16), nil) {
		t.Fatal("written directly past a queued packet")
	}
	<-cl.outboundQueue()

	// A write in progress (the client's lock is held): queue.
	cl.Lock()
	if cl.writeDirect(seqPublish(2, 16), nil) {
		t.Fatal("written directly during another write")
	}
	cl.Unlock()
}

// A peer that does not read: direct writes fill the socket without ever
// blocking; the rest of the packet that did not fit goes out from a write
// loop (started for the flush marker), before what is queued after it,
// and nothing is torn.
func TestWriteDirectPartialGoesToWriteLoop(t *testing.T) {
	cl, peer := directTestClient(t)
	defer cl.Stop(nil)
	const size = 64 << 10
	seq := uint32(0)
	deadline := time.Now().Add(10 * time.Second)
	for atomic.LoadInt32(&cl.State.outboundQty) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the socket never filled")
		}
		seq++
		if !cl.writeDirect(seqPublish(seq, size), nil) {
			t.Fatalf("packet %d not written directly", seq)
		}
	}
	// The flush marker is queued (its writer may be blocked writing the
	// rest of packet seq): nothing may overtake it.
	if cl.writeDirect(seqPublish(seq+1, size), nil) {
		t.Fatal("written directly while a partial packet is pending")
	}
	// Queue two more, as publishToClient would, then drain.
	for i := uint32(1); i <= 2; i++ {
		pk := seqPublish(seq+i, size)
		if !cl.enqueueOutbound(&pk) {
			t.Fatal("queue full")
		}
	}
	got := readSeqs(t, bufio.NewReader(peer), int(seq)+2)
	for i, s := range got {
		if s != uint32(i+1) {
			t.Fatalf("packet %d has sequence %d", i, s)
		}
	}
}

func TestNoDirectWritesOnPipes(t *testing.T) {
	r, w := net.Pipe()
	defer r.Close()
	defer w.Close()
	cl := newClient(w, &ops{info: new(system.Info), hooks: new(Hooks), log: directTestLogger,
		options: &Options{Capabilities: &Capabilities{MaximumClientWritesPending: 4}, ClientDirectWrites: true}})
	if cl.Net.raw != nil || cl.writeDirect(seqPublish(1, 16), nil) {
		t.Fatal("direct write on a pipe")
	}
}
