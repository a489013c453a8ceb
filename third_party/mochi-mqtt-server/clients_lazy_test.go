// SPDX-License-Identifier: MIT

package mqtt

import (
	"testing"
	"unsafe"

	"github.com/mochi-mqtt/server/v2/packets"
)

// A client's outbound queue is made when the first packet is queued, with
// the configured capacity (the slow-consumer limit: TestClientWriterQueueFull).
func TestClientOutboundQueueOnFirstUse(t *testing.T) {
	cl, r := newWriterTestClient(t, 3)
	if cl.State.outbound.Load() != nil || cl.outboundLen() != 0 {
		t.Fatal("a new client has an outbound queue")
	}
	if !cl.enqueueOutbound(publishPacket("t/1")) {
		t.Fatal("queue full")
	}
	if q := cl.State.outbound.Load(); q == nil || cap(*q) != 3 {
		t.Fatal("no queue of capacity 3 after the first packet")
	}
	if got := readTopic(t, r); got != "t/1" {
		t.Fatalf("got %q", got)
	}
}

// ParseConnect copies the client identifier: the decoded one shares the
// CONNECT packet's memory (with the password), which the client would
// otherwise keep for as long as it is connected.
func TestParseConnectCopiesClientID(t *testing.T) {
	cl, _ := newWriterTestClient(t, 3)
	buf := []byte("client-1 and the rest of a CONNECT packet")
	id := unsafe.String(&buf[0], 8)
	cl.ParseConnect("t", packets.Packet{ProtocolVersion: 4, Connect: packets.ConnectParams{ClientIdentifier: id, Keepalive: 30}})
	if cl.ID != "client-1" || unsafe.StringData(cl.ID) == unsafe.StringData(id) {
		t.Fatalf("ID %q shares the packet's memory", cl.ID)
	}
}

// A new client's inflight, subscription and topic alias maps are made when
// first written to; until then they read as empty.
func TestClientMapsOnFirstUse(t *testing.T) {
	cl, _ := newWriterTestClient(t, 3)
	st := &cl.State
	if st.Inflight.internal != nil || st.Subscriptions.internal != nil || st.TopicAliases.Inbound.internal != nil || st.TopicAliases.Outbound.internal != nil {
		t.Fatal("a new client has made its maps")
	}
	if st.Inflight.Len() != 0 || st.Subscriptions.Len() != 0 || len(st.Inflight.GetAll(false)) != 0 || st.Inflight.Clone().Len() != 0 {
		t.Fatal("empty maps are not empty")
	}
	st.Inflight.Set(packets.Packet{PacketID: 7})
	st.Subscriptions.Add("a/b", packets.Subscription{Filter: "a/b"})
	if _, ok := st.Inflight.Get(7); !ok || st.Inflight.Clone().Len() != 1 {
		t.Fatal("inflight packet not kept")
	}
	if _, ok := st.Subscriptions.Get("a/b"); !ok {
		t.Fatal("subscription not kept")
	}
	in := NewInboundTopicAliases(5)
	if in.Set(1, "x/y") != "x/y" || in.Set(1, "") != "x/y" {
		t.Fatal("inbound alias not kept")
	}
	out := NewOutboundTopicAliases(5)
	if a, ok := out.Set("x/y"); a != 1 || ok {
		t.Fatalf("first outbound alias %d, %v", a, ok)
	}
	if a, ok := out.Set("x/y"); a != 1 || !ok {
		t.Fatalf("outbound alias again %d, %v", a, ok)
	}
}
