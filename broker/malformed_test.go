package broker

import (
	"context"
	"testing"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgechat/edgechat/internal/testutil/mqtttest"
)

// A v5 SUBSCRIBE whose last filter lacks its subscription options byte
// is a malformed packet: DISCONNECT 0x81, that connection closed, the
// node serving its other clients. mochi's decoder read that byte past
// the packet's end, a panic no goroutine recovered: the whole node
// ended, so any signed-in user (any anonymous client in --dev) could
// stop any node, every client of it disconnected, as often as they liked
// (mochi-mqtt/server#501).
func TestASubscribeWithoutItsOptionsIsMalformed(t *testing.T) {
	e := startBroker(t, nil)
	bob := mustV5(t, e.addr, "bob", "phone")
	conn, r := rawDialV5(t, e.addr, "alice/raw", "alice", "tok:alice")
	// Packet ID 1, no properties, the filter, and no options byte.
	vh := mqtttest.RawString([]byte{0, 1, 0}, "user/alice/newMessage")
	if _, err := conn.Write(mqtttest.RawPacket(0x82, vh)); err != nil {
		t.Fatal(err)
	}
	if typ, body := readRawPacket(t, r); typ != 0xe0 || len(body) < 1 || body[0] != 0x81 {
		t.Fatalf("got %#x % x, want DISCONNECT 0x81 (malformed packet)", typ, body)
	}
	// The node still serves its other clients.
	pr, err := bob.Publish(context.Background(), &paho.Publish{Topic: "user/alice/newMessage", QoS: 1,
		Payload: []byte(`{"cid":"after","type":"text","body":"still there?"}`)})
	if err != nil || pr == nil || pr.ReasonCode != 0 {
		t.Fatalf("bob's publish after the malformed SUBSCRIBE: %v %+v", err, pr)
	}
}
