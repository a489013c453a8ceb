// SPDX-License-Identifier: MIT

package mqtt

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/mochi-mqtt/server/v2/system"
)

// newWriterTestClient is a client writing to one end of a pipe, with no
// writer running; the test reads the other end.
func newWriterTestClient(t *testing.T, pending int32) (*Client, *bufio.Reader) {
	t.Helper()
	r, w := net.Pipe()
	t.Cleanup(func() {
		_ = r.Close()
		_ = w.Close()
	})
	cl := newClient(w, &ops{
		info:  new(system.Info),
		hooks: new(Hooks),
		log:   slog.New(slog.NewTextHandler(io.Discard, nil)),
		options: &Options{
			Capabilities: &Capabilities{
				ReceiveMaximum:             10,
				MaximumInflight:            5,
				TopicAliasMaximum:          10000,
				MaximumClientWritesPending: pending,
				maximumPacketID:            10,
			},
		},
	})
	cl.ID = "writer"
	cl.Properties.ProtocolVersion = 4
	// A generous deadline turns a writer that never runs into a failure
	// instead of a hung test; nothing here depends on timing.
	_ = r.SetReadDeadline(time.Now().Add(30 * time.Second))
	return cl, bufio.NewReader(r)
}

func publishPacket(topic string) *packets.Packet {
	return &packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish},
		TopicName:   topic,
		Payload:     []byte("x"),
	}
}

// readTopic reads one PUBLISH from r and returns its topic.
func readTopic(t *testing.T, r *bufio.Reader) string {
	t.Helper()
	b, err := r.ReadByte()
	if err != nil {
		t.Fatalf("read fixed header: %v", err)
	}
	fh := new(packets.FixedHeader)
	if err := fh.Decode(b); err != nil {
		t.Fatalf("decode fixed header: %v", err)
	}
	n, _, err := packets.DecodeLength(r)
	if err != nil {
		t.Fatalf("decode length: %v", err)
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(r, buf); err != nil {
		t.Fatalf("read packet: %v", err)
	}
	pk := packets.Packet{FixedHeader: *fh, ProtocolVersion: 4}
	if err := pk.PublishDecode(buf); err != nil {
		t.Fatalf("decode publish: %v", err)
	}
	return pk.TopicName
}

// The writer runs only while packets are queued: it is started by the
// first packet, returns once the queue is empty, and a later packet starts
// a new one. Every packet is written once, in the order each producer
// queued them.
func TestClientWriterOnDemand(t *testing.T) {
	const producers, each = 4, 25
	cl, r := newWriterTestClient(t, producers*each)

	for round := 0; round < 2; round++ {
		var wg sync.WaitGroup
		for p := 0; p < producers; p++ {
			wg.Add(1)
			go func(p int) {
				defer wg.Done()
				for i := 0; i < each; i++ {
					if !cl.enqueueOutbound(publishPacket(fmt.Sprintf("r%d/p%d/%d", round, p, i))) {
						t.Errorf("queue full at producer %d packet %d", p, i)
						return
					}
				}
			}(p)
		}

		next := make([]int, producers)
		for n := 0; n < producers*each; n++ {
			var rr, p, i int
			topic := readTopic(t, r)
			if _, err := fmt.Sscanf(topic, "r%d/p%d/%d", &rr, &p, &i); err != nil || rr != round || p < 0 || p >= producers {
				t.Fatalf("round %d: unexpected topic %q", round, topic)
			}
			if i != next[p] {
				t.Fatalf("round %d: producer %d: got packet %d, want %d", round, p, i, next[p])
			}
			next[p]++
		}
		wg.Wait()

		// Every packet was read, so the writer finishes its last one and
		// stops: nothing is pending and no writer is left behind.
		for atomic.LoadInt32(&cl.State.outboundQty) != 0 {
			time.Sleep(time.Millisecond)
		}
		if n := cl.outboundLen(); n != 0 {
			t.Fatalf("round %d: %d packets left in the queue", round, n)
		}
	}
}

// A full queue refuses packets (the caller drops them and counts them);
// once the writer drains it, packets are accepted again.
func TestClientWriterQueueFull(t *testing.T) {
	cl, r := newWriterTestClient(t, 2)

	accepted := 0
	for cl.enqueueOutbound(publishPacket(fmt.Sprintf("t/%d", accepted))) {
		accepted++
		if accepted > 3 { // 2 queued and at most 1 taken by the blocked writer
			t.Fatalf("queue of 2 accepted %d packets while nothing was read", accepted)
		}
	}
	if accepted < 2 {
		t.Fatalf("queue of 2 accepted only %d packets", accepted)
	}
	for i := 0; i < accepted; i++ {
		if got, want := readTopic(t, r), fmt.Sprintf("t/%d", i); got != want {
			t.Fatalf("packet %d: topic %q, want %q", i, got, want)
		}
	}
	if !cl.enqueueOutbound(publishPacket("t/again")) {
		t.Fatal("queue still full after it was drained")
	}
	if got := readTopic(t, r); got != "t/again" {
		t.Fatalf("topic %q, want t/again", got)
	}
}

// The first packet after a client has been idle is processed on a
// goroutine of its own (readAndHandleAside), the others in place; either
// way each packet is handled once, in order, and a handler's error ends
// Read.
func TestClientReadAfterIdle(t *testing.T) {
	r, w := net.Pipe()
	t.Cleanup(func() {
		_ = r.Close()
		_ = w.Close()
	})
	cl := newClient(r, &ops{
		info:    new(system.Info),
		hooks:   new(Hooks),
		log:     slog.New(slog.NewTextHandler(io.Discard, nil)),
		options: &Options{Capabilities: &Capabilities{ReceiveMaximum: 10, MaximumInflight: 5, MaximumClientWritesPending: 4}},
	})
	cl.Properties.ProtocolVersion = 4
	cl.State.Keepalive = 60

	var got []string
	errEnd := fmt.Errorf("end")
	done := make(chan error, 1)
	go func() {
		done <- cl.Read(func(_ *Client, pk packets.Packet) error {
			got = append(got, pk.TopicName)
			if pk.TopicName == "t/end" {
				return errEnd
			}
			return nil
		})
	}()

	send := func(topic string) {
		t.Helper()
		pk := publishPacket(topic)
		pk.ProtocolVersion = 4
		var buf bytes.Buffer
		if err := pk.PublishEncode(&buf); err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(buf.Bytes()); err != nil {
			t.Fatalf("write %s: %v", topic, err)
		}
	}
	send("t/1") // at once
	send("t/2")
	time.Sleep(idleHandoff + 100*time.Millisecond)
	send("t/3") // after an idle second: aside
	send("t/end")
	if err := <-done; err != errEnd {
		t.Fatalf("Read returned %v, want the handler's error", err)
	}
	if want := []string{"t/1", "t/2", "t/3", "t/end"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("handled %v, want %v", got, want)
	}
}

// The once-a-second expiry checks allocate nothing for connected clients
// without inflight messages, however many there are (they copied the whole
// client map, and each client's inflight map, every second).
func TestExpiryChecksIdleClientsAllocateNothing(t *testing.T) {
	s := New(nil)
	for i := 0; i < 1000; i++ {
		cl, _ := newWriterTestClient(t, 1)
		cl.ID = fmt.Sprintf("idle-%d", i)
		s.Clients.Add(cl)
	}
	now := time.Now().Unix()
	if n := testing.AllocsPerRun(10, func() {
		s.clearExpiredClients(now)
		s.clearExpiredInflights(now)
	}); n != 0 {
		t.Fatalf("%v allocations per expiry check of 1,000 idle clients, want 0", n)
	}
	if s.Clients.Len() != 1000 {
		t.Fatalf("%d clients left, want the 1,000 connected ones", s.Clients.Len())
	}
}
