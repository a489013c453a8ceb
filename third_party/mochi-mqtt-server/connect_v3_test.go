// SPDX-License-Identifier: MIT

//go:build unix

package mqtt

import (
	"bufio"
	"bytes"
	"net"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// An MQTT 3.1.1 client that asks to keep its session with an empty
// client identifier is refused with return code 2, identifier rejected
// [MQTT-3.1.3-8]. Before, it got 0x80, which is no 3.1.1 return code
// (0 to 5 only): its library could only say "unknown reason".
func TestV311PersistentSessionWithoutIdentifierRefused(t *testing.T) {
	_, addr := startAliasServer(t, false)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetReadDeadline(time.Now().Add(15 * time.Second))
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 4,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: false, Keepalive: 60}}
	var buf bytes.Buffer
	if err := pk.ConnectEncode(&buf); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(buf.Bytes()); err != nil {
		t.Fatal(err)
	}
	ack := readPacket(t, bufio.NewReader(c), 4)
	if ack.FixedHeader.Type != packets.Connack || ack.ReasonCode != packets.Err3ClientIdentifierNotValid.Code {
		t.Fatalf("CONNACK return code %#x, want 2 (identifier rejected)", ack.ReasonCode)
	}
}
