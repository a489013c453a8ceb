package broker

import (
	"strings"
	"testing"

	"github.com/edgechat/edgechat/internal/testutil/mqtttest"
)

// The broker refuses packets over MaxPacketSize (it closes the
// connection), so it tells MQTT 5 clients the limit in the CONNACK
// (Maximum Packet Size): a client library then refuses a larger publish
// itself with a clear error [MQTT-3.2.2-15]. Before: the CONNACK did not
// say, a v5 client took the size as unlimited, and a larger publish
// closed its connection with no reason given.
func TestConnackAdvertisesMaximumPacketSize(t *testing.T) {
	for _, dev := range []bool{false, true} {
		e := startBroker(t, func(c *Config) { c.Dev = dev; c.MaxPacketSize = 32 << 10 })
		o := mqtttest.Options{ClientID: "anon"}
		if !dev {
			o = mqtttest.Options{ClientID: "alice/phone", Username: "alice", Password: "tok:alice"}
		}
		_, ca, err := mqtttest.Dial(t, e.addr, o)
		if err != nil {
			t.Fatalf("dev %v: connect: %v", dev, err)
		}
		if ca.Properties == nil || ca.Properties.MaximumPacketSize == nil || *ca.Properties.MaximumPacketSize != 32<<10 {
			var got any
			if ca.Properties != nil && ca.Properties.MaximumPacketSize != nil {
				got = *ca.Properties.MaximumPacketSize
			}
			t.Fatalf("dev %v: CONNACK Maximum Packet Size %v, want %d", dev, got, 32<<10)
		}
		// Outside --dev every $share filter is refused: the CONNACK says
		// shared subscriptions are not available (absent means they are).
		if ca.Properties.SharedSubAvailable != dev {
			t.Errorf("dev %v: CONNACK Shared Subscription Available %v", dev, ca.Properties.SharedSubAvailable)
		}
	}
}

// A packet over the Maximum Packet Size the CONNACK gave (a client that
// did not look) ends the connection with DISCONNECT 0x95 (packet too
// large) before it closes, as MQTT 5 asks of a server that closes for a
// reason [MQTT-4.13.2-1]; before, the connection closed with nothing, and
// the client could only guess why. Nothing of it is stored. So does a
// malformed packet (0x81). A 3.1.1 client, which has no DISCONNECT from
// the server, is closed as before.
func TestAPacketTooLargeIsToldWithDisconnect(t *testing.T) {
	e := startBroker(t, func(c *Config) { c.MaxPacketSize = 32 << 10 })
	for _, tc := range []struct {
		name   string
		packet []byte
		code   byte
	}{
		{"too large", rawPublishV5("user/alice/newMessage", 1, 0,
			`{"cid":"big","type":"text","body":"`+strings.Repeat("x", 40<<10)+`"}`), 0x95},
		// A PUBLISH whose topic length runs past the packet's end.
		{"malformed", []byte{0x32, 0x04, 0x00, 0x10, 'u', '/'}, 0x81},
	} {
		conn, r := rawDialV5(t, e.addr, "bob/raw", "bob", "tok:bob")
		go func() { _, _ = conn.Write(tc.packet) }() // the server may stop reading it half way
		typ, body := readRawPacket(t, r)
		if typ != 0xe0 || len(body) < 1 || body[0] != tc.code {
			t.Errorf("%s: got %#x % x, want DISCONNECT %#x", tc.name, typ, body, tc.code)
		}
		_ = conn.Close()
	}
	if n := e.chat.storedCount(); n != 0 {
		t.Fatalf("%d messages stored, want 0", n)
	}
}

// Outside --dev every $share filter is refused 0x87 (the CONNACK says
// shared subscriptions are not available, so a library such as paho
// refuses them itself: this client sends the SUBSCRIBE regardless).
func TestSharedSubscriptionsAreRefusedOutsideDev(t *testing.T) {
	e := startBroker(t, nil)
	conn, r := rawDialV5(t, e.addr, "alice/raw", "alice", "tok:alice")
	for i, filter := range []string{"$share/g/user/alice/newMessage", "$share/s/group/g1/newMessage", "$share/g/sensors/#"} {
		if _, err := conn.Write(mqtttest.RawSubscribeV5(uint16(i+1), filter)); err != nil {
			t.Fatal(err)
		}
		typ, body := readRawPacket(t, r)
		if typ != 0x90 || len(body) < 4 {
			t.Fatalf("%s: got %#x % x, want SUBACK", filter, typ, body)
		}
		// Packet ID, properties (length, then them), one reason code.
		props := int(body[2])
		if code := body[len(body)-1]; len(body) != 3+props+1 || code != 0x87 {
			t.Errorf("%s: SUBACK % x, want reason 0x87", filter, body)
		}
	}
}
