package broker

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	pahopk "github.com/eclipse/paho.golang/packets"
	mqtt "github.com/mochi-mqtt/server/v2"

	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/internal/wire"
)

// dialStoreQuota connects clientID as uid over MQTT 5 with clean start
// off and a session expiry (a phone's persistent session) and the
// Receive Maximum recvMax (0: none), and subscribes to filters at QoS 1
// unless it resumed a session. It returns the connection, its reader
// and whether the CONNACK said a session was present.
func dialStoreQuota(t *testing.T, addr, uid, clientID string, recvMax uint16, filters ...string) (net.Conn, *bufio.Reader, bool) {
	t.Helper()
	return dialRaw(t, addr, uid, clientID, false, func(cp *pahopk.Connect) {
		if recvMax > 0 {
			cp.Properties.ReceiveMaximum = &recvMax
		}
	}, filters...)
}

// dialRaw connects clientID as uid over MQTT 5 with a hand-made CONNECT:
// clean start, or a persistent session (expiry 600 s); tweak (if not
// nil) changes the CONNECT before it is sent. It subscribes to filters
// at QoS 1 unless a session was resumed, and returns the connection, its
// reader and whether the CONNACK said a session was present.
func dialRaw(t *testing.T, addr, uid, clientID string, clean bool, tweak func(*pahopk.Connect), filters ...string) (net.Conn, *bufio.Reader, bool) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	cp := pahopk.NewControlPacket(pahopk.CONNECT).Content.(*pahopk.Connect)
	cp.ProtocolName, cp.ProtocolVersion = "MQTT", 5
	cp.ClientID, cp.KeepAlive, cp.CleanStart = clientID, 300, clean
	cp.UsernameFlag, cp.Username, cp.PasswordFlag, cp.Password = true, uid, true, []byte("tok:"+uid)
	cp.Properties = &pahopk.Properties{}
	if !clean {
		expiry := uint32(600)
		cp.Properties.SessionExpiryInterval = &expiry
	}
	if tweak != nil {
		tweak(cp)
	}
	if _, err := cp.WriteTo(c); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(waitFor))
	r := bufio.NewReader(c)
	p, err := pahopk.ReadPacket(r)
	if err != nil {
		t.Fatalf("connack: %v", err)
	}
	ca, ok := p.Content.(*pahopk.Connack)
	if !ok || ca.ReasonCode != 0 {
		t.Fatalf("connack: %+v", p.Content)
	}
	if ca.SessionPresent || len(filters) == 0 {
		return c, r, ca.SessionPresent
	}
	sp := pahopk.NewControlPacket(pahopk.SUBSCRIBE).Content.(*pahopk.Subscribe)
	sp.PacketID = 1
	for _, f := range filters {
		sp.Subscriptions = append(sp.Subscriptions, pahopk.SubOptions{Topic: f, QoS: 1})
	}
	if _, err := sp.WriteTo(c); err != nil {
		t.Fatal(err)
	}
	for {
		p, err := pahopk.ReadPacket(r)
		if err != nil {
			t.Fatalf("suback: %v", err)
		}
		if p.Type == pahopk.SUBACK {
			break
		}
	}
	return c, r, false
}

// storeQuotaDM publishes, as the server does for a committed direct
// message, message i to bob.
func storeQuotaDM(t *testing.T, e *testEnv, i int) {
	t.Helper()
	payload := fmt.Sprintf(`{"id":"%d","from":"alice","to":"bob","cid":"c%d","type":"text","body":"m%d"}`, 1000+i, i, i)
	if err := e.b.Publish(wire.Outbound{Topic: "user/bob/newMessage", Payload: []byte(payload), QoS: 1}); err != nil {
		t.Fatal(err)
	}
}

// A phone with a small Receive Maximum that acknowledges its deliveries
// slowly (here: not at all) has the rest of them wait in its session;
// the session holds at most 1024 (mochi's MaximumInflight). A chat
// message past that was dropped with only a log line: not counted, and
// the connection stayed, so the client never learnt that it missed a
// message (protocol.md: a chat message that does not fit closes the
// connection with 0x89 so that the client syncs). Now it is dropped
// as one that does not fit the outbound queue: counted, and the
// connection closed with DISCONNECT 0x89.
func TestADeliveryPastTheSessionStoreClosesTheConnection(t *testing.T) {
	e := startBroker(t, nil)
	bob, r, _ := dialStoreQuota(t, e.addr, "bob", "bob/phone", 1, "user/bob/newMessage")
	store := int(e.b.srv.Options.Capabilities.MaximumInflight)
	for i := 0; i <= store; i++ {
		storeQuotaDM(t, e, i)
	}
	_ = bob.SetReadDeadline(time.Now().Add(waitFor))
	for n := 0; ; n++ {
		p, err := pahopk.ReadPacket(r)
		if err != nil {
			t.Fatalf("bob's connection after %d packets: %v, and %v dropped: no DISCONNECT 0x89, bob never learns he missed a message",
				n, err, metric(t, e, "edgechat_mqtt_messages_dropped_total", map[string]string{"class": "direct", "reason": "queue_full"}))
		}
		if d, ok := p.Content.(*pahopk.Disconnect); ok {
			if d.ReasonCode != 0x89 {
				t.Fatalf("DISCONNECT %#x, want 0x89", d.ReasonCode)
			}
			break
		}
	}
	if got := metric(t, e, "edgechat_mqtt_messages_dropped_total", map[string]string{"class": "direct", "reason": "queue_full"}); got == 0 {
		t.Fatal("the dropped message was not counted")
	}
}

// A phone whose persistent session fills up while it is offline (more
// than 1024 chat messages and presence updates queued for it, a day in
// busy groups) came back to session present 1 and the 1024 oldest, the
// newer ones dropped without a trace: a client that trusts its session
// shows neither them nor the latest presence of its contacts. Now the
// session that lost a stored message or a presence update is ended: the
// client comes back to session present 0, so it subscribes again (and
// gets the retained, current presence) and syncs.
func TestAnOfflineSessionThatOverflowsIsEnded(t *testing.T) {
	e := startBroker(t, nil)
	bob, _, _ := dialStoreQuota(t, e.addr, "bob", "bob/phone", 0, "user/bob/newMessage")
	_ = bob.Close() // the phone goes away; its session stays
	testutil.CheckFor(t, waitFor, time.Millisecond, func() error {
		if cl, ok := e.b.srv.Clients.Get("bob/phone"); !ok || !cl.Closed() {
			return fmt.Errorf("bob's session not offline yet")
		}
		return nil
	})
	store := int(e.b.srv.Options.Capabilities.MaximumInflight)
	for i := 0; i <= store; i++ {
		storeQuotaDM(t, e, i)
	}
	if _, _, present := dialStoreQuota(t, e.addr, "bob", "bob/phone", 0); present {
		cl, _ := e.b.srv.Clients.Get("bob/phone")
		t.Fatalf("session present 1 with %d of the %d messages sent meanwhile: the newest were dropped and bob is not told",
			cl.State.Inflight.Len(), store+1)
	}
}

// A phone resumes a session that holds as many messages as a session
// may (1024) on a slow link: while the node writes them (the handshake
// ends only once they are written), a new chat message finds the store
// full and is dropped. It was dropped silently: the connection was
// "still in its handshake", which was taken to mean that the client
// subscribes and syncs after it anyway; but only a resumed session has
// deliveries during its handshake, and its client (session present 1)
// need not subscribe again. Now the connection, once established, is
// closed with 0x89 as for a drop after it.
func TestADeliveryDroppedWhileASessionResumesClosesTheConnection(t *testing.T) {
	e := startBroker(t, nil)
	bob, _, _ := dialStoreQuota(t, e.addr, "bob", "bob/phone", 0, "user/bob/newMessage")
	_ = bob.Close()
	testutil.CheckFor(t, waitFor, time.Millisecond, func() error {
		if cl, ok := e.b.srv.Clients.Get("bob/phone"); !ok || !cl.Closed() {
			return fmt.Errorf("bob's session not offline yet")
		}
		return nil
	})
	store := int(e.b.srv.Options.Capabilities.MaximumInflight)
	// More in all than the sockets hold: the node's send buffer grows up
	// to the kernel's tcp_wmem maximum, bob's receive buffer stays small
	// while he does not read.
	body := strings.Repeat("x", resendStallSize(store))
	for i := 0; i < store; i++ {
		payload := fmt.Sprintf(`{"id":"%d","from":"alice","to":"bob","cid":"c%d","type":"text","body":%q}`, 1000+i, i, body)
		if err := e.b.Publish(wire.Outbound{Topic: "user/bob/newMessage", Payload: []byte(payload), QoS: 1}); err != nil {
			t.Fatal(err)
		}
	}
	// bob comes back on a slow link: he reads the CONNACK, then nothing
	// for a while as the node resends.
	bob, r, present := dialStoreQuota(t, e.addr, "bob", "bob/phone", 0)
	if !present {
		t.Fatal("bob's session was not resumed")
	}
	var cl *mqtt.Client
	testutil.CheckFor(t, waitFor, time.Millisecond, func() error {
		c, ok := e.b.srv.Clients.Get("bob/phone")
		if !ok || c.Closed() || e.b.connOf(c) == nil {
			return fmt.Errorf("bob's new connection not in the client map yet")
		}
		cl = c
		return nil
	})
	if e.b.connOf(cl).established.Load() {
		t.Fatal("the resend did not wait for bob's socket: the test shows nothing")
	}
	storeQuotaDM(t, e, store) // during the handshake: the store is full
	_ = bob.SetReadDeadline(time.Now().Add(waitFor))
	for n := 0; ; n++ {
		p, err := pahopk.ReadPacket(r)
		if err != nil {
			t.Fatalf("bob's connection after %d packets: %v: no DISCONNECT 0x89, bob never learns he missed a message", n, err)
		}
		if d, ok := p.Content.(*pahopk.Disconnect); ok {
			if d.ReasonCode != 0x89 {
				t.Fatalf("DISCONNECT %#x, want 0x89", d.ReasonCode)
			}
			return
		}
		_ = bob.SetReadDeadline(time.Now().Add(waitFor))
	}
}

// resendStallSize is the size of each of n messages that together fill
// more than a loopback socket's buffers (Linux: the tcp_wmem maximum of
// the sender, plus a margin for the receiver's), at most what a packet
// may hold.
func resendStallSize(n int) int {
	wmem := 4 << 20
	if b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_wmem"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 3 {
			if v, err := strconv.Atoi(f[2]); err == nil {
				wmem = v
			}
		}
	}
	return min(max((wmem+(4<<20))/n, 8<<10), DefaultMaxPacketSize-1024)
}

// A user keeps at most OfflineSessionsPerUser persistent sessions
// offline on a node: one that connected from many device IDs held a
// queue of up to 1,024 deliveries in each, every message copied into all
// of them, for a day. Past the cap the session offline longest ends: its
// client comes back to session present 0 (and syncs); the newer ones
// resume. Another user's sessions are not touched.
func TestOfflineSessionsPerUserAreCapped(t *testing.T) {
	e := startBroker(t, nil)
	limit := e.b.cfg.OfflineSessionsPerUser
	offline := func(uid, id string) {
		t.Helper()
		c, _, _ := dialStoreQuota(t, e.addr, uid, id, 0, "user/"+uid+"/newMessage")
		_ = c.Close()
		testutil.CheckFor(t, waitFor, time.Millisecond, func() error {
			if cl, ok := e.b.srv.Clients.Get(id); !ok || !cl.Closed() {
				return fmt.Errorf("%s not offline yet", id)
			}
			return nil
		})
	}
	offline("alice", "alice/phone")
	for i := range limit + 2 {
		offline("bob", fmt.Sprintf("bob/d%02d", i))
	}
	for i := range limit + 2 {
		id := fmt.Sprintf("bob/d%02d", i)
		_, ok := e.b.srv.Clients.Get(id)
		if want := i >= 2; ok != want {
			t.Errorf("%s's session kept: %v, want %v (the %d newest of %d kept)", id, ok, want, limit, limit+2)
		}
	}
	if _, _, present := dialStoreQuota(t, e.addr, "bob", "bob/d00", 0); present {
		t.Error("the oldest session over the cap resumed")
	}
	if _, _, present := dialStoreQuota(t, e.addr, "bob", fmt.Sprintf("bob/d%02d", limit+1), 0); !present {
		t.Error("the newest session did not resume")
	}
	if _, _, present := dialStoreQuota(t, e.addr, "alice", "alice/phone", 0); !present {
		t.Error("another user's session was ended")
	}
}
