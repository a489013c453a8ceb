// SPDX-License-Identifier: MIT
// SPDX-FileCopyrightText: 2023 mochi-mqtt, mochi-co

//go:build unix

package mqtt

import (
	"bufio"
	"errors"
	"net"
	"testing"
	"time"
)

// A direct write never waits, so a write deadline (which bounds a wait)
// does not stop it: with the deadline passed the packet still goes out,
// raw system calls or not. Writes through RawConn.Write failed with a
// timeout here and the delivery was lost.
func TestWriteDirectIgnoresPassedWriteDeadline(t *testing.T) {
	for _, raw := range []bool{false, true} {
		cl, peer := directTestClient(t)
		cl.ops.options.ClientRawSyscalls = raw
		if err := cl.Net.Conn.SetWriteDeadline(time.Now().Add(-time.Second)); err != nil {
			t.Fatal(err)
		}
		if !cl.writeDirect(seqPublish(7, 16), nil) {
			t.Fatal("an idle client was not written directly")
		}
		_ = peer.SetReadDeadline(time.Now().Add(5 * time.Second)) // bounds a failing test only
		if got := readSeqs(t, bufio.NewReader(peer), 1); got[0] != 7 {
			t.Fatalf("raw=%v: got %v", raw, got)
		}
	}
}

// A closed connection still reports an error (the socket is not used
// after its close).
func TestWriteNonBlockingOnClosedConnection(t *testing.T) {
	cl, _ := directTestClient(t)
	_ = cl.Net.Conn.Close()
	if _, err := writeNonBlocking(cl.Net.raw, []byte{0xe0, 0}, false); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("err %v, want net.ErrClosed", err)
	}
}

// BenchmarkWriteNonBlocking is one direct write of a small packet to a
// TCP peer that reads everything (the system call included).
func BenchmarkWriteNonBlocking(b *testing.B) {
	cl, peer := directTestClient(b)
	go func() {
		buf := make([]byte, 64<<10)
		for {
			if _, err := peer.Read(buf); err != nil {
				return
			}
		}
	}()
	pkt := make([]byte, 100)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := writeNonBlocking(cl.Net.raw, pkt, true); err != nil {
			b.Fatal(err)
		}
	}
}
