package broker

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// qos2Conn is a bare MQTT v5 connection for the QoS 2 exchange.
type qos2Conn struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

// dialQoS2 connects clientID as uid with a persistent session (clean
// start off, a session expiry) and returns the CONNACK.
func dialQoS2(t *testing.T, addr, uid, clientID string) (*qos2Conn, packets.Packet) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	c := &qos2Conn{t: t, conn: conn, r: bufio.NewReader(conn)}
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

func (c *qos2Conn) write(pk packets.Packet) {
	c.t.Helper()
	pk.ProtocolVersion = 5
	var buf bytes.Buffer
	var err error
	switch pk.FixedHeader.Type {
	case packets.Connect:
		err = pk.ConnectEncode(&buf)
	case packets.Publish:
		err = pk.PublishEncode(&buf)
	case packets.Pubrel:
		err = pk.PubrelEncode(&buf)
	}
	if err == nil {
		_, err = c.conn.Write(buf.Bytes())
	}
	if err != nil {
		c.t.Fatal(err)
	}
}

func (c *qos2Conn) read() packets.Packet {
	c.t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	hb, err := c.r.ReadByte()
	if err != nil {
		c.t.Fatal(err)
	}
	pk := packets.Packet{ProtocolVersion: 5}
	if err := pk.FixedHeader.Decode(hb); err != nil {
		c.t.Fatal(err)
	}
	n, _, err := packets.DecodeLength(c.r)
	if err != nil {
		c.t.Fatal(err)
	}
	pk.FixedHeader.Remaining = n
	body := make([]byte, n)
	if _, err := io.ReadFull(c.r, body); err != nil {
		c.t.Fatal(err)
	}
	switch pk.FixedHeader.Type {
	case packets.Connack:
		err = pk.ConnackDecode(body)
	case packets.Pubrec:
		err = pk.PubrecDecode(body)
	case packets.Pubcomp:
		err = pk.PubcompDecode(body)
	default:
		c.t.Fatalf("unexpected packet type %d", pk.FixedHeader.Type)
	}
	if err != nil {
		c.t.Fatal(err)
	}
	return pk
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
	pub := func(c *qos2Conn, dup bool) packets.Packet {
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
