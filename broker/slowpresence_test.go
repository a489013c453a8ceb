package broker

import (
	"bufio"
	"fmt"
	"net"
	"testing"
	"time"

	pahopk "github.com/eclipse/paho.golang/packets"

	"github.com/edgechat/edgechat/internal/wire"
)

// A watcher too slow for what it is sent (its outbound queue full)
// loses a presence update the node drops, and then shows that user's
// old status for as long as it does not change again: the node closes
// its connection with "server busy" as for a dropped chat message, so
// that the client reconnects, subscribes again and gets the retained,
// current status (protocol.md: the last presence/{uid} a client got is
// the current one). Before: the update was only counted, and the
// connection stayed on the stale status.
func TestAWatcherThatMissedAPresenceUpdateIsToldToResubscribe(t *testing.T) {
	e := startBroker(t, func(c *Config) { c.Dev = true; c.MaxWritesPending = 16 })
	e.vis.set("bob", "alice", true)

	// bob watches alice and also gets an open topic; he stops reading.
	bob, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bob.Close() })
	cp := pahopk.NewControlPacket(pahopk.CONNECT).Content.(*pahopk.Connect)
	cp.ProtocolName, cp.ProtocolVersion = "MQTT", 5
	cp.ClientID, cp.KeepAlive, cp.CleanStart = "bob/slow", 300, true
	cp.UsernameFlag, cp.Username, cp.PasswordFlag, cp.Password = true, "bob", true, []byte("tok:bob")
	if _, err := cp.WriteTo(bob); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(bob)
	if p, err := pahopk.ReadPacket(r); err != nil || p.Content.(*pahopk.Connack).ReasonCode != 0 {
		t.Fatalf("connack: %v", err)
	}
	sp := pahopk.NewControlPacket(pahopk.SUBSCRIBE).Content.(*pahopk.Subscribe)
	sp.PacketID = 1
	sp.Subscriptions = []pahopk.SubOptions{{Topic: "presence/alice", QoS: 1}, {Topic: "fill/#"}}
	if _, err := sp.WriteTo(bob); err != nil {
		t.Fatal(err)
	}
	if p, err := pahopk.ReadPacket(r); err != nil || p.Type != pahopk.SUBACK {
		t.Fatalf("suback: %v", err)
	}

	// Fill bob's socket and queue until the node drops for him, then
	// alice goes offline: the update cannot reach bob (the kernel may
	// still take some of what is queued: fill again until it is dropped).
	pub := rawTestSub(t, e.addr, "filler", "", 0)
	w := bufio.NewWriter(pub)
	dropped := func(class string) float64 {
		return metric(t, e, "edgechat_mqtt_messages_dropped_total", map[string]string{"class": class, "reason": "queue_full"})
	}
	for i := 0; dropped("presence") == 0; i++ {
		if i == 100000 {
			t.Fatal("nothing dropped for a subscriber that does not read")
		}
		writeTestPublish(w, "fill/x", fmt.Appendf(nil, "0:%d:", i), 8<<10)
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
		if dropped("other") == 0 {
			continue
		}
		if err := e.b.Publish(wire.Outbound{Topic: "presence/alice", Payload: []byte(`{"status":"offline"}`), Retain: true, QoS: 1}); err != nil {
			t.Fatal(err)
		}
	}

	// bob reads again: what was written to him, then the DISCONNECT.
	_ = bob.SetReadDeadline(time.Now().Add(20 * time.Second))
	for n := 0; ; n++ {
		p, err := pahopk.ReadPacket(r)
		if err != nil {
			t.Fatalf("bob's connection after %d packets: %v (no DISCONNECT: bob keeps alice's stale status)", n, err)
		}
		if d, ok := p.Content.(*pahopk.Disconnect); ok {
			if d.ReasonCode != 0x89 {
				t.Fatalf("DISCONNECT %#x, want 0x89", d.ReasonCode)
			}
			return
		}
	}
}
