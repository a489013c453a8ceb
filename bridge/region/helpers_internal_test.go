package region

import (
	"net"
	"testing"

	"github.com/eclipse/paho.golang/packets"
)

// fakePeer listens on loopback for a link's MQTT connections, standing
// for another region, and hands each connection to accept from its
// accept loop (so in the order they come); the listener and every
// connection are closed when the test ends. It returns the URL to dial.
func fakePeer(t *testing.T, accept func(c net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { _ = c.Close() })
			accept(c)
		}
	}()
	return "tcp://" + ln.Addr().String()
}

// answerMQTT reads c's packets until a read fails, answering a CONNECT
// with a CONNACK and a PINGREQ with a PINGRESP and handing every other
// packet's content to other.
func answerMQTT(c net.Conn, other func(p any)) {
	for {
		cp, err := packets.ReadPacket(c)
		if err != nil {
			return
		}
		switch cp.Content.(type) {
		case *packets.Connect:
			_, _ = packets.NewControlPacket(packets.CONNACK).WriteTo(c)
		case *packets.Pingreq:
			_, _ = packets.NewControlPacket(packets.PINGRESP).WriteTo(c)
		default:
			other(cp.Content)
		}
	}
}
