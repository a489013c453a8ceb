package broker

import (
	"bufio"
	"net"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
)

// dialQoS2 connects clientID as uid with a persistent session (clean
// start off, a session expiry) and returns the CONNACK.
func dialQoS2(t *testing.T, addr, uid, clientID string) (*rawV5, packets.Packet) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	c := &rawV5{t: t, conn: conn, r: bufio.NewReader(conn)}
	c.write(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Connect},
		Connect: packets.ConnectParams{
			ProtocolName: []byte("MQTT"), Keepalive: 30, ClientIdentifier: clientID,
			UsernameFlag: true, Username: []byte(uid), PasswordFlag: true, Password: []byte("tok:" + uid),
		},
		Properties: packets.Properties{SessionExpiryInterval: 300, SessionExpiryIntervalFlag: true},
	})
	ca := c.read()
	if ca.FixedHeader.Type != packets.Connack || ca.ReasonCode != 0 {
		t.Fatalf("CONNACK %+v", ca)
	}
	return c, ca
}

// A QoS 2 publish whose PUBREC was lost with the connection is sent again
// (DUP) on the resumed session, as MQTT 5 4.4 asks: the server must
// answer PUBREC again, with success, and deliver it no second time
// [MQTT-4.3.3-10]; PUBREL then completes it. Before: the resend was
// answered PUBREC 0x91 (packet identifier in use), a failure, after
// which the client frees the identifier without a PUBREL while the
// server kept it: every later QoS 2 publish with that identifier (paho
// takes the lowest free one: the next) failed the same way, for the life
// of the session.
func TestQoS2ResendAfterReconnectIsAcknowledged(t *testing.T) {
	e := startBroker(t, nil)
	env := `{"cid":"c-q2","type":"text","body":"exactly once"}`
	pub := func(c *rawV5, dup bool) packets.Packet {
		c.write(packets.Packet{
			FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 2, Dup: dup},
			TopicName:   "user/bob/newMessage", PacketID: 1, Payload: []byte(env),
		})
		return c.read()
	}

	first, _ := dialQoS2(t, e.addr, "alice", "alice/phone")
	if rec := pub(first, false); rec.FixedHeader.Type != packets.Pubrec || rec.ReasonCode != 0 {
		t.Fatalf("first PUBREC: type %d reason %#x", rec.FixedHeader.Type, rec.ReasonCode)
	}
	_ = first.conn.Close() // the PUBREL is never sent: the connection is lost

	again, ca := dialQoS2(t, e.addr, "alice", "alice/phone")
	if !ca.SessionPresent {
		t.Fatal("session not resumed")
	}
	// The resumed session resends its PUBREC first (our copy of mochi).
	if rec := again.read(); rec.FixedHeader.Type != packets.Pubrec || rec.PacketID != 1 || rec.ReasonCode != 0 {
		t.Fatalf("resent PUBREC: type %d id %d reason %#x", rec.FixedHeader.Type, rec.PacketID, rec.ReasonCode)
	}
	if rec := pub(again, true); rec.FixedHeader.Type != packets.Pubrec || rec.ReasonCode != 0 {
		t.Fatalf("PUBREC of the resent publish: reason %#x (%s), want 0x00", rec.ReasonCode, rec.Properties.ReasonString)
	}
	again.write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel, Qos: 1}, PacketID: 1})
	if comp := again.read(); comp.FixedHeader.Type != packets.Pubcomp || comp.ReasonCode != 0 {
		t.Fatalf("PUBCOMP: type %d reason %#x", comp.FixedHeader.Type, comp.ReasonCode)
	}
	if n := e.chat.callCount(); n != 1 {
		t.Fatalf("the chat store saw %d sends, want 1", n)
	}
	// The identifier is free again: a new message with it goes through.
	env = `{"cid":"c-q2b","type":"text","body":"next"}`
	if rec := pub(again, false); rec.ReasonCode != 0 {
		t.Fatalf("PUBREC of the next publish with identifier 1: reason %#x", rec.ReasonCode)
	}
	if n := e.chat.callCount(); n != 2 {
		t.Fatalf("the chat store saw %d sends, want 2", n)
	}
}
