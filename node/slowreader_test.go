package node_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgechat/edgechat/node/nodetest"
)

// A device that stops reading (a phone gone without closing its
// connection) must not hold up anyone else's messages. Every committed
// chat message is delivered at QoS 1 by one goroutine per node; mochi
// took the stuck client's write lock to number each delivery to it, a
// lock its writer held in a write that could not finish, so the node's
// whole live delivery waited for that connection's write deadline
// (mochi patch 33).
func TestAStuckReaderDoesNotHoldUpOtherUsersMessages(t *testing.T) {
	n := nodetest.StartNode(t)
	aliceTok, bobTok := n.NewUser(t, "alice"), n.NewUser(t, "bob")
	carolTok, daveTok := n.NewUser(t, "carol"), n.NewUser(t, "dave")

	stuckReader(t, n.MQTTURL, "bob", bobTok, "user/bob/newMessage")
	dave := mustConnectV5(t, n.MQTTURL, "dave", "phone", daveTok)
	dave.MustSub(t, "user/dave/newMessage")

	// Enough for bob's socket buffers to fill: the node's writes to him
	// stop finishing.
	alice := mustConnectV5(t, n.MQTTURL, "alice", "phone", aliceTok)
	body := strings.Repeat("x", 8000)
	for i := range 3000 {
		if code, _ := alice.Pub(t, "user/bob/newMessage", 1, textMsg(fmt.Sprintf("big-%d", i), body)); code != 0 {
			t.Fatalf("message %d to bob: %#x", i, code)
		}
	}

	carol := mustConnectV5(t, n.MQTTURL, "carol", "phone", carolTok)
	if code, _ := carol.Pub(t, "user/dave/newMessage", 1, textMsg("hi", "hello dave")); code != 0 {
		t.Fatalf("carol's message: %#x", code)
	}
	nodetest.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		for _, m := range dave.Received("user/dave/newMessage") {
			if strings.Contains(string(m.Payload), "hello dave") {
				return nil
			}
		}
		return errors.New("carol's message has not reached dave: the node's live delivery waits for bob's stuck connection")
	})
}

// stuckReader connects uid over a plain socket with a small receive
// buffer, subscribes to filter, and then never reads again: the server's
// writes to it stop finishing once the socket's buffers are full.
func stuckReader(t *testing.T, addr, uid, token, filter string) {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(addr, "tcp://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	_ = c.(*net.TCPConn).SetReadBuffer(4096)
	send := func(pk packets.Packet, encode func(*packets.Packet, *bytes.Buffer) error) {
		t.Helper()
		var b bytes.Buffer
		if err := encode(&pk, &b); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write(b.Bytes()); err != nil {
			t.Fatal(err)
		}
	}
	r := bufio.NewReader(c)
	expect := func(typ byte) {
		t.Helper()
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		first, err := r.ReadByte()
		if err != nil {
			t.Fatal(err)
		}
		if first>>4 != typ {
			t.Fatalf("packet type %d, want %d", first>>4, typ)
		}
		n, mult := 0, 1
		for {
			d, err := r.ReadByte()
			if err != nil {
				t.Fatal(err)
			}
			n += int(d&0x7f) * mult
			mult *= 128
			if d&0x80 == 0 {
				break
			}
		}
		if _, err := r.Discard(n); err != nil {
			t.Fatal(err)
		}
	}
	send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 5,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 60,
			ClientIdentifier: uid + "/stuck", UsernameFlag: true, Username: []byte(uid), PasswordFlag: true, Password: []byte(token)},
		Properties: packets.Properties{ReceiveMaximum: 4000}}, (*packets.Packet).ConnectEncode)
	expect(packets.Connack)
	send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, ProtocolVersion: 5, PacketID: 1,
		Filters: packets.Subscriptions{{Filter: filter, Qos: 1}}}, (*packets.Packet).SubscribeEncode)
	expect(packets.Suback)
}
