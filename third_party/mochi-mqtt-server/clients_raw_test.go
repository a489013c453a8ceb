// SPDX-License-Identifier: MIT
// SPDX-FileCopyrightText: 2026 edgechat contributors

//go:build unix

package mqtt

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/mochi-mqtt/server/v2/system"
)

// rawTestConns is a TCP connection's two ends.
func rawTestConns(t *testing.T) (c, peer net.Conn) {
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
	c, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); peer.Close() })
	return c, peer
}

// The raw reader reads like net.Conn.Read: data as it comes (waiting for
// it), the deadline's error, io.EOF when the peer closes, net.ErrClosed
// once closed.
func TestRawReaderReadsLikeConn(t *testing.T) {
	c, peer := rawTestConns(t)
	r := newRawReader(c, nil)
	if r == nil {
		t.Fatal("no raw reader for a TCP connection")
	}
	if pr, pw := net.Pipe(); newRawReader(pw, nil) != nil {
		t.Fatal("a raw reader for a pipe")
	} else {
		pr.Close()
		pw.Close()
	}

	go func() {
		time.Sleep(20 * time.Millisecond) // the read waits for it
		_, _ = peer.Write([]byte("hello"))
	}()
	buf := make([]byte, 16)
	n, err := r.Read(buf)
	if err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("read %q, %v", buf[:n], err)
	}

	_ = c.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
	if _, err := r.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("past the deadline: %v", err)
	}
	_ = c.SetReadDeadline(time.Time{})

	_, _ = peer.Write([]byte("bye"))
	_ = peer.Close()
	var got []byte
	for {
		n, err := r.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			if err != io.EOF || string(got) != "bye" {
				t.Fatalf("after the peer closed: %q, %v", got, err)
			}
			break
		}
	}

	_ = c.Close()
	if _, err := r.Read(buf); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("closed: %v", err)
	}
}

// With ClientRawSyscalls a client reads its packets through the raw
// reader, and direct writes go out with raw write(2), a socket that is
// full included (the rest goes to the write loop, in order).
func TestClientRawSyscalls(t *testing.T) {
	c, peer := rawTestConns(t)
	cl := newClient(c, &ops{
		info:  new(system.Info),
		hooks: new(Hooks),
		log:   directTestLogger,
		options: &Options{
			Capabilities:             &Capabilities{MaximumClientWritesPending: 4},
			ClientNetReadBufferSize:  1024,
			ClientNetWriteBufferSize: 2048,
			ClientDirectWrites:       true,
			ClientRawSyscalls:        true,
		},
	})
	defer cl.Stop(nil)
	cl.ID = "raw"
	cl.Properties.ProtocolVersion = 4
	if _, ok := cl.Net.rawRead.(*rawReader); !ok {
		t.Fatalf("reads from %T", cl.readSource())
	}

	// Reads: two publishes, then the peer closes.
	var wire []byte
	for i := uint32(1); i <= 2; i++ {
		pk := seqPublish(i, 16)
		b, err := encodePrepared(pk)
		if err != nil {
			t.Fatal(err)
		}
		wire = append(wire, b.Bytes()...)
	}
	go func() {
		_, _ = peer.Write(wire[:3]) // a packet split over reads
		time.Sleep(10 * time.Millisecond)
		_, _ = peer.Write(wire[3:])
	}()
	for i := uint32(1); i <= 2; i++ {
		fh := new(packets.FixedHeader)
		if err := cl.ReadFixedHeader(fh); err != nil {
			t.Fatal(err)
		}
		pk, err := cl.ReadPacket(fh)
		if err != nil || pk.TopicName != "a/b" || len(pk.Payload) != 16 || pk.Payload[3] != byte(i) {
			t.Fatalf("packet %d: %+v, %v", i, pk, err)
		}
	}

	// Direct writes until the socket is full (the peer does not read yet),
	// then the rest through the write loop; everything arrives in order.
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
	pk := seqPublish(seq+1, size)
	if !cl.enqueueOutbound(&pk) {
		t.Fatal("queue full")
	}
	got := readSeqs(t, bufio.NewReader(peer), int(seq)+1)
	for i, s := range got {
		if s != uint32(i+1) {
			t.Fatalf("packet %d has sequence %d", i, s)
		}
	}

	_ = peer.Close()
	if err := cl.ReadFixedHeader(new(packets.FixedHeader)); err != io.EOF {
		t.Fatalf("after the peer closed: %v", err)
	}
}
