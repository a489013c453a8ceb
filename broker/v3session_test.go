package broker

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgechat/edgechat/internal/testutil"
)

// rawV311 is an MQTT 3.1.1 client that reads packets one by one and
// acknowledges nothing unless told.
type rawV311 struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

// dialV311Session connects clientID as uid over MQTT 3.1.1 with clean
// session 0 (a phone's persistent session) and, unless a session was
// resumed, subscribes to filters at QoS 1. It returns the client and
// whether the CONNACK said a session was present.
func dialV311Session(t *testing.T, addr, uid, clientID string, filters ...string) (*rawV311, bool) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	c := &rawV311{t: t, conn: conn, r: bufio.NewReader(conn)}
	c.write(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Connect},
		Connect: packets.ConnectParams{
			ProtocolName: []byte("MQTT"), Keepalive: 300, ClientIdentifier: clientID,
			UsernameFlag: true, Username: []byte(uid), PasswordFlag: true, Password: []byte("tok:" + uid),
		},
	})
	ca, err := c.read()
	if err != nil || ca.FixedHeader.Type != packets.Connack || ca.ReasonCode != 0 {
		t.Fatalf("CONNACK %+v: %v", ca, err)
	}
	if ca.SessionPresent || len(filters) == 0 {
		return c, ca.SessionPresent
	}
	sub := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: 1}
	for _, f := range filters {
		sub.Filters = append(sub.Filters, packets.Subscription{Filter: f, Qos: 1})
	}
	c.write(sub)
	for {
		pk, err := c.read()
		if err != nil {
			t.Fatalf("SUBACK: %v", err)
		}
		if pk.FixedHeader.Type == packets.Suback {
			return c, false
		}
	}
}

func (c *rawV311) write(pk packets.Packet) {
	c.t.Helper()
	pk.ProtocolVersion = 4
	var buf bytes.Buffer
	var err error
	switch pk.FixedHeader.Type {
	case packets.Connect:
		err = pk.ConnectEncode(&buf)
	case packets.Subscribe:
		err = pk.SubscribeEncode(&buf)
	}
	if err == nil {
		_, err = c.conn.Write(buf.Bytes())
	}
	if err != nil {
		c.t.Fatal(err)
	}
}

// read reads the next packet (PUBLISH, CONNACK and SUBACK decoded).
func (c *rawV311) read() (packets.Packet, error) {
	_ = c.conn.SetReadDeadline(time.Now().Add(waitFor))
	hb, err := c.r.ReadByte()
	if err != nil {
		return packets.Packet{}, err
	}
	pk := packets.Packet{ProtocolVersion: 4}
	if err := pk.FixedHeader.Decode(hb); err != nil {
		return pk, err
	}
	n, _, err := packets.DecodeLength(c.r)
	if err != nil {
		return pk, err
	}
	pk.FixedHeader.Remaining = n
	body := make([]byte, n)
	if _, err := io.ReadFull(c.r, body); err != nil {
		return pk, err
	}
	switch pk.FixedHeader.Type {
	case packets.Connack:
		err = pk.ConnackDecode(body)
	case packets.Suback:
		err = pk.SubackDecode(body)
	case packets.Publish:
		err = pk.PublishDecode(body)
	}
	return pk, err
}

// readUntilClosed reads until the server closes the connection and
// returns how many packets came.
func (c *rawV311) readUntilClosed() int {
	c.t.Helper()
	for n := 0; ; n++ {
		if _, err := c.read(); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				c.t.Fatalf("the connection was not closed (%d packets read)", n)
			}
			return n
		}
	}
}

// An MQTT 3.1.1 client gets no DISCONNECT from a server: when the node
// closes its connection so that it syncs (a chat message it missed: its
// queue or its session store was full; a catch-up from a snapshot), the
// client sees a network drop, reconnects with clean session 0 and was
// handed its session back (session present 1) without the message:
// nothing ever told it that one was missing. Now the session of a
// connection closed so is not resumed: session present 0 is the signal a
// 3.1.1 client has (an MQTT 5 client gets it as well as the 0x89), and
// it subscribes again and syncs, as protocol.md asks after a 0x89.
func TestAV311SessionClosedToSyncIsNotResumed(t *testing.T) {
	for _, cause := range []string{"snapshot", "session_store_full"} {
		t.Run(cause, func(t *testing.T) {
			e := startBroker(t, nil)
			bob, _ := dialV311Session(t, e.addr, "bob", "bob/phone", "user/bob/newMessage")
			switch cause {
			case "snapshot":
				e.b.ResyncClients()
			case "session_store_full":
				// bob reads and acknowledges nothing: his session holds what
				// is sent to him until the store is full.
				store := int(e.b.srv.Options.Capabilities.MaximumInflight)
				for i := 0; i <= store; i++ {
					storeQuotaDM(t, e, i)
				}
			}
			bob.readUntilClosed()
			testutil.CheckFor(t, waitFor, time.Millisecond, func() error {
				if cl, ok := e.b.srv.Clients.Get("bob/phone"); ok && !cl.Closed() {
					return fmt.Errorf("bob's connection still open")
				}
				return nil
			})
			if _, present := dialV311Session(t, e.addr, "bob", "bob/phone"); present {
				t.Fatal("session present 1: bob resumes his session and never learns he missed a message")
			}
		})
	}
}
