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

// dialV3 connects an MQTT 3.1.1 client and reads its CONNACK.
func dialV3(t *testing.T, addr, id string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetReadDeadline(time.Now().Add(15 * time.Second))
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 4,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 60, ClientIdentifier: id}}
	var buf bytes.Buffer
	if err := pk.ConnectEncode(&buf); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(buf.Bytes()); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(c)
	if ack := readPacket(t, r, 4); ack.FixedHeader.Type != packets.Connack || ack.ReasonCode != 0 {
		t.Fatalf("CONNACK: %+v", ack)
	}
	return c, r
}

// Patch 62: MQTT 3.1.1 has no server DISCONNECT (3.14: "the final Control
// Packet sent from the Client to the Server"): a server that ends a
// 3.1.1 connection closes it. The copy wrote a DISCONNECT (0xE0 0x00)
// first, whatever the client's version, and a 3.1.1 client takes that
// as a protocol violation: mosquitto_sub -V 311 taken over, or closed by
// the server (a refused QoS 1 publish, a node cut off from its
// cluster), said "Error: A network protocol error occurred when
// communicating with the broker." instead of "The connection was lost."
func TestNoDisconnectPacketToAV311Client(t *testing.T) {
	forBothWriteModes(t, func(t *testing.T, direct bool) {
		s, addr := startAliasServer(t, direct)
		_, r := dialV3(t, addr, "closed")
		cl, ok := s.Clients.Get("closed")
		if !ok {
			t.Fatal("client not registered")
		}
		_ = s.DisconnectClient(cl, packets.ErrServerBusy)
		if types, _, disconnected := readUntilEnd(r); disconnected || len(types) != 0 {
			t.Errorf("closed by the server: the 3.1.1 client read packets of types %v (a DISCONNECT: %v), want the end of the connection only", types, disconnected)
		}

		_, r = dialV3(t, addr, "phone")
		dialV3(t, addr, "phone") // takes the session over
		if types, _, disconnected := readUntilEnd(r); disconnected || len(types) != 0 {
			t.Errorf("taken over: the 3.1.1 client read packets of types %v (a DISCONNECT: %v), want the end of the connection only", types, disconnected)
		}

		// A v5 client still gets its DISCONNECT and reason code.
		_, r = connectReceiveMax(t, addr, "v5", 10)
		v5, _ := s.Clients.Get("v5")
		_ = s.DisconnectClient(v5, packets.ErrServerBusy)
		if types, reason, disconnected := readUntilEnd(r); !disconnected || reason != packets.ErrServerBusy.Code {
			t.Errorf("v5 client: packets %v, DISCONNECT %v %#x, want DISCONNECT 0x89", types, disconnected, reason)
		}
	})
}
