package broker

import (
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
	}
}
