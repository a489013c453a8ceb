package node_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgechat/edgechat/internal/testutil"
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

	_ = stuckReader(t, n.MQTTURL, "bob", bobTok, "user/bob/newMessage", 4096)
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

// A device too slow for its messages (its outbound queue full) would
// lose the ones the node drops without knowing it: the node closes its
// connection with "server busy" so that it reconnects and syncs, and the
// sync has every message.
func TestASubscriberTooSlowForItsMessagesIsToldToSync(t *testing.T) {
	n := nodetest.StartNode(t)
	aliceTok, bobTok := n.NewUser(t, "alice"), n.NewUser(t, "bob")
	// The kernel's default buffers: a 4 KB one would make reading back
	// what filled them take minutes (a window update per segment).
	bob := stuckReader(t, n.MQTTURL, "bob", bobTok, "user/bob/newMessage", 0)

	alice := mustConnectV5(t, n.MQTTURL, "alice", "phone", aliceTok)
	body := strings.Repeat("x", 8000)
	// Until the node has told bob to sync (his queue overflowed): from
	// then on his DISCONNECT waits at most 30 s (slowDisconnectWait) for
	// him to read, so he must start soon. Sending all of a fixed 3,000
	// first took longer than that on a loaded CI machine, and bob's
	// connection was closed without the DISCONNECT he then read for.
	told := func() bool {
		v, _ := testutil.MetricValue(t, n.Registry(), "edgechat_mqtt_refused_total", map[string]string{"reason": "slow_subscriber"})
		return v > 0
	}
	sent := 0
	for ; sent < 3000 && (sent%10 != 0 || !told()); sent++ {
		if code, _ := alice.Pub(t, "user/bob/newMessage", 1, textMsg(fmt.Sprintf("big-%d", sent), body)); code != 0 {
			t.Fatalf("message %d to bob: %#x", sent, code)
		}
	}
	t.Logf("bob was told to sync after %d messages (told: %v)", sent, told())

	// bob reads again: what was written to him, then the DISCONNECT.
	var got []byte
	for {
		typ, body, err := bob.next(20 * time.Second)
		if err != nil {
			t.Fatalf("bob's connection after %d packets: %v (no DISCONNECT: bob was not told that he missed messages)", len(got), err)
		}
		got = append(got, typ)
		if typ == packets.Disconnect {
			if len(body) == 0 || body[0] != packets.ErrServerBusy.Code {
				t.Fatalf("DISCONNECT %x, want reason %#x", body, packets.ErrServerBusy.Code)
			}
			break
		}
	}
	if len(got) > sent {
		t.Fatalf("bob read %d packets for %d messages", len(got), sent)
	}
	seen := map[string]bool{}
	for _, m := range syncAll(t, n, bobTok) {
		seen[m.CID] = true
	}
	if len(seen) != sent {
		t.Fatalf("bob's sync has %d of the %d messages", len(seen), sent)
	}
}

// rawReader is a plain MQTT connection read packet by packet.
type rawReader struct {
	c net.Conn
	r *bufio.Reader
}

// next reads one packet: its type and what follows its fixed header.
func (rr *rawReader) next(wait time.Duration) (typ byte, body []byte, err error) {
	_ = rr.c.SetReadDeadline(time.Now().Add(wait))
	first, err := rr.r.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	n, mult := 0, 1
	for {
		d, err := rr.r.ReadByte()
		if err != nil {
			return 0, nil, err
		}
		n += int(d&0x7f) * mult
		mult *= 128
		if d&0x80 == 0 {
			break
		}
	}
	body = make([]byte, n)
	if _, err := io.ReadFull(rr.r, body); err != nil {
		return 0, nil, err
	}
	return first >> 4, body, nil
}

// stuckReader connects uid over a plain socket (with a receive buffer of
// rcvbuf bytes, 0: the kernel's default), subscribes to filter, and then
// reads nothing until the test does: the server's writes to it stop
// finishing once the socket's buffers are full.
func stuckReader(t *testing.T, addr, uid, token, filter string, rcvbuf int) *rawReader {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(addr, "tcp://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if rcvbuf > 0 {
		_ = c.(*net.TCPConn).SetReadBuffer(rcvbuf)
	}
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
	rr := &rawReader{c: c, r: bufio.NewReader(c)}
	expect := func(typ byte) {
		t.Helper()
		got, _, err := rr.next(5 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if got != typ {
			t.Fatalf("packet type %d, want %d", got, typ)
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
	return rr
}
