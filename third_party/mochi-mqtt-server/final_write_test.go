// SPDX-License-Identifier: MIT

//go:build unix

package mqtt

import (
	"bufio"
	"io"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// readUntilEnd reads packets until the connection ends; it returns their
// types and the reason code of a DISCONNECT, if one came.
func readUntilEnd(r *bufio.Reader) (types []byte, reason byte, disconnected bool) {
	for {
		b, err := r.ReadByte()
		if err != nil {
			return
		}
		n, _, err := packets.DecodeLength(r)
		if err != nil {
			return
		}
		body := make([]byte, n)
		if _, err := io.ReadFull(r, body); err != nil {
			return
		}
		types = append(types, b>>4)
		if b>>4 == packets.Disconnect {
			if n > 0 {
				reason = body[0]
			}
			disconnected = true
		}
	}
}

// Patch 34: a server DISCONNECT written while packets were queued for the
// client went into the pending output, behind the queue, and the
// connection closed before the write loop flushed it: the client never
// learnt why (edgechat closes a subscriber too slow for its messages with
// 0x89 so that it syncs).
func TestDisconnectReachesAClientWithQueuedPackets(t *testing.T) {
	forBothWriteModes(t, func(t *testing.T, direct bool) {
		s, addr, gate := startOrderServer(t, direct)
		c, r := connectReceiveMax(t, addr, "phone", 10)
		cl, _ := s.Clients.Get("phone")
		// The write loop takes a packet and is descheduled while encoding
		// it: the queue is not empty when the DISCONNECT is written.
		entered, resume := gate.arm(func(_ *Client, pk packets.Packet) bool {
			return pk.FixedHeader.Type == packets.Publish && string(pk.Payload) == "x"
		})
		for _, p := range []string{"x", "y"} {
			pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: "a/b", Payload: []byte(p)}
			if !cl.enqueueOutbound(&pk) {
				t.Fatal("queue full")
			}
		}
		<-entered
		done := make(chan error, 1)
		go func() { done <- s.DisconnectClient(cl, packets.ErrServerBusy) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("DisconnectClient did not return")
		}
		close(resume)
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		types, reason, disconnected := readUntilEnd(r)
		if !disconnected || reason != packets.ErrServerBusy.Code {
			t.Fatalf("the client read packets of types %v and then the end, no DISCONNECT 0x89 (got %v, %#x)", types, disconnected, reason)
		}
	})
}

// Patch 34: closing a client that stopped reading does not wait for its
// write deadline (1.5 x keepalive, 90 s here): a takeover's new
// connection or the server's shutdown waits on it.
func TestDisconnectOfAClientThatDoesNotReadReturns(t *testing.T) {
	s, addr, _ := startOrderServer(t, false)
	c, r := connectReceiveMax(t, addr, "stuck", 10)
	subscribeV5(t, c, 1, "big")
	if ack := readPacket(t, r, 5); ack.FixedHeader.Type != packets.Suback {
		t.Fatalf("SUBACK: %+v", ack)
	}
	cl, _ := s.Clients.Get("stuck")
	big := make([]byte, 64<<10)
	for range 300 { // its socket's buffers fill: the write loop blocks in a write
		if err := s.Publish("big", big, false, 0); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan error, 1)
	go func() { done <- s.DisconnectClient(cl, packets.ErrSessionTakenOver) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("DisconnectClient of a client that does not read still waits after 20 s")
	}
	waitUntil(t, "closed", cl.Closed)
}
