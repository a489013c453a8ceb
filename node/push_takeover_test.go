package node_test

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	pahov3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgechat/edgechat/bridge/push/pushtest"
	"github.com/edgechat/edgechat/internal/testutil/mqtttest"
	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
)

// A phone on a flaky network reconnects with the same client ID and a
// kept session before the server saw its old connection die: the new
// connection takes the session over, and the deliveries the old one never
// acknowledged are resent on it. They are watched there, not pushed at
// the takeover.

// rawSession connects bob's device over a raw socket with a kept session
// (MQTT 5: clean start 0, session expiry 3600 s; 3.1.1: clean session 0)
// and, unless the CONNACK says a session was resumed, subscribes to the
// inbox at QoS 1. It reads only when told and acknowledges nothing (a
// phone whose network went away under the open connection).
func rawSession(t *testing.T, f *pushFlow, device string, v311 bool) *rawDevice {
	t.Helper()
	conn, err := net.Dial("tcp", f.n.MQTTAddr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	d := &rawDevice{conn: conn, r: bufio.NewReader(conn)}
	var vh []byte
	if v311 {
		vh = []byte{0, 4, 'M', 'Q', 'T', 'T', 4, 0xc0, 0, 60}
	} else {
		vh = []byte{0, 4, 'M', 'Q', 'T', 'T', 5, 0xc0, 0, 60, 5, 0x11, 0, 0, 0x0e, 0x10}
	}
	vh = mqtttest.RawString(mqtttest.RawString(mqtttest.RawString(vh, "bob/"+device), "bob"), f.bob)
	if _, err := conn.Write(mqtttest.RawPacket(0x10, vh)); err != nil {
		t.Fatal(err)
	}
	typ, body, err := mqtttest.ReadRawPacket(d.r)
	if err != nil || typ != 0x20 || len(body) < 2 || body[1] != 0 {
		t.Fatalf("CONNACK: type %#x body %x err %v", typ, body, err)
	}
	if body[0]&1 == 0 { // no session present: subscribe
		sub := mqtttest.RawSubscribeV5(1, "user/bob/newMessage")
		if v311 {
			sub = mqtttest.RawPacket(0x82, append(mqtttest.RawString([]byte{0, 1}, "user/bob/newMessage"), 1))
		}
		if _, err := conn.Write(sub); err != nil {
			t.Fatal(err)
		}
		if typ, body, err := mqtttest.ReadRawPacket(d.r); err != nil || typ != 0x90 || body[len(body)-1] != 1 {
			t.Fatalf("SUBACK: type %#x body %x err %v", typ, body, err)
		}
	}
	_ = conn.SetDeadline(time.Time{})
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if !f.n.ClientConnected("bob/" + device) {
			return errors.New("bob/" + device + " is not registered as connected")
		}
		return nil
	})
	return d
}

// halfOpenPhoneWithMessage connects bob's phone with a kept session,
// sends it a message, and waits until the delivery went into its socket.
// It returns the message's ID and when it was sent.
func halfOpenPhoneWithMessage(t *testing.T, f *pushFlow, v311 bool) (string, time.Time) {
	t.Helper()
	old := rawSession(t, f, "phone", v311)
	start := time.Now()
	id := f.send(t, "user/bob/newMessage", "as the network flapped")
	old.nextPublish(t) // written to the old connection, never acknowledged
	return id, start
}

// noPushFor checks that the message is done (its decisions recorded) with
// no push to bob's phone.
func (f *pushFlow) noPushFor(t *testing.T, id, why string) {
	t.Helper()
	f.outboxEmpty(t)
	if n := f.pushesFor(f.phone, id); n != 0 {
		t.Fatalf("bob's phone got %d pushes for a message %s", n, why)
	}
}

// The session resumed over MQTT 5 by a client that acknowledges the
// resent message: no push.
func TestPushNotForADeliveryResentToTheConnectionThatTookTheSessionOver(t *testing.T) {
	f := startPushFlow(t, 0)
	id, _ := halfOpenPhoneWithMessage(t, f, false)
	now, ca, err := mqtttest.Dial(t, f.n.MQTTAddr(), mqtttest.Options{ClientID: "bob/phone", Username: "bob", Password: f.bob,
		KeepSession: true, SessionExpiry: 3600})
	if err != nil {
		t.Fatal(err)
	}
	if !ca.SessionPresent {
		t.Fatal("the reconnection did not resume the session")
	}
	if got := decodeEnvelope(t, now.Next(t).Payload).ID; got != id {
		t.Fatalf("the new connection got message %s, want %s resent", got, id)
	}
	f.noPushFor(t, id, "it received, and acknowledged, on the connection that took its session over")
	f.decided(t, "connected", 1)
}

// The same over MQTT 3.1.1 (clean session 0), with Eclipse Paho's Go
// client taking the session over.
func TestPushNotForADeliveryResentToAV311ConnectionThatTookTheSessionOver(t *testing.T) {
	f := startPushFlow(t, 0)
	id, _ := halfOpenPhoneWithMessage(t, f, true)
	got := make(chan string, 10)
	opts := pahov3.NewClientOptions().AddBroker("tcp://" + f.n.MQTTAddr()).
		SetClientID("bob/phone").SetUsername("bob").SetPassword(f.bob).
		SetProtocolVersion(4).SetCleanSession(false).SetAutoReconnect(false).SetConnectTimeout(10 * time.Second).
		SetDefaultPublishHandler(func(_ pahov3.Client, m pahov3.Message) {
			var e envelope
			if jsonUnmarshal(m.Payload(), &e) == nil {
				got <- e.ID
			}
		})
	c := pahov3.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	select {
	case g := <-got:
		if g != id {
			t.Fatalf("the new connection got message %s, want %s resent", g, id)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the message was not resent to the connection that took the session over")
	}
	f.noPushFor(t, id, "it received, and acknowledged, on the 3.1.1 connection that took its session over")
	f.decided(t, "connected", 1)
}

// A connection that took the session over and does not acknowledge the
// resent message either is pushed, once, at the bound counted from the
// delivery, as the old connection would have been; one that ends without
// acknowledging it, at its end.
func TestPushADeliveryTheConnectionThatTookTheSessionOverDoesNotAcknowledge(t *testing.T) {
	for _, ends := range []bool{false, true} {
		t.Run(fmt.Sprintf("ends=%v", ends), func(t *testing.T) {
			f := startPushFlow(t, 0)
			id, sent := halfOpenPhoneWithMessage(t, f, false)
			takeover := time.Now()
			now := rawSession(t, f, "phone", false)
			now.nextPublish(t) // resent, never acknowledged
			if ends {
				_ = now.conn.Close()
			}
			el := f.firstPush(t, id, takeover)
			elSent := time.Since(sent)
			t.Logf("pushed %v after the commit, %v after the takeover", elSent.Round(time.Millisecond), el.Round(time.Millisecond))
			switch {
			case !ends && (elSent < flowAckTimeout || elSent > flowAckTimeout+3*time.Second):
				t.Errorf("pushed %v after the commit, want at the bound of %v (the takeover %v after the commit)",
					elSent, flowAckTimeout, takeover.Sub(sent).Round(time.Millisecond))
			case !ends && !f.n.ClientConnected("bob/phone"):
				t.Error("the connection that took the session over was dropped: the push came from its end, not from the bound")
			case ends && el >= flowAckTimeout:
				t.Errorf("pushed %v after the takeover: not at the end of the new connection, before the bound of %v", el, flowAckTimeout)
			}
			f.outboxEmpty(t)
			if n := f.pushesFor(f.phone, id); n != 1 {
				t.Fatalf("%d pushes for one message", n)
			}
		})
	}
}

// A reconnection with a clean start discards the session, and the old
// connection's unacknowledged deliveries with it: they are not resent,
// and the phone is pushed at the takeover, as before.
func TestPushADeliveryWhoseSessionAReconnectionDiscarded(t *testing.T) {
	f := startPushFlow(t, 0)
	id, _ := halfOpenPhoneWithMessage(t, f, false)
	start := time.Now()
	now := mqtttest.MustDial(t, f.n.MQTTAddr(), mqtttest.Options{ClientID: "bob/phone", Username: "bob", Password: f.bob})
	if el := f.firstPush(t, id, start); el >= flowAckTimeout {
		t.Errorf("pushed %v after the takeover: not at the takeover, before the bound of %v", el, flowAckTimeout)
	}
	f.onlyPush(t, id)
	if m, ok := now.TryNext(); ok {
		t.Fatalf("the discarded session's message was sent to the new connection: %s", m.Payload)
	}
}

// A phone that reconnects on another node of the cluster while its old
// connection, dead, is still open on the first: the registry's takeover
// closes the old connection and drops its session there (a session never
// moves between nodes), the new connection starts with no session
// (session present 0) and is not sent the message again (the client
// syncs), so the old connection's unacknowledged delivery is decided as
// not connected at the takeover, as after a clean start: pushed once.
func TestPushADeviceThatReconnectsOnAnotherNodeForWhatItsOldConnectionHadNotAcknowledged(t *testing.T) {
	opt, m := withPushMocks(t)
	nodes := nodetest.StartCluster(t, 3, opt, nodetest.WithConfig(func(c *node.Config) {
		c.PushGrace, c.PushAckTimeout = flowGrace, flowAckTimeout
	}))
	away, other := nodes[0], nodes[1]
	aliceTok, bobTok := nodes[0].NewUser(t, "alice"), nodes[0].NewUser(t, "bob")
	f := &pushFlow{n: away, m: m, alice: aliceTok, bob: bobTok, phone: pushtest.NewDeviceToken()}
	if st := api(t, away, bobTok, "POST", "/user/me/devices",
		map[string]any{"device": "phone", "platform": "apns", "token": f.phone}, nil); st != 200 {
		t.Fatalf("register the phone: %d", st)
	}
	old := rawSession(t, f, "phone", false)
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		for _, n := range nodes {
			if !n.ClientConnected("bob/phone") {
				return errors.New("the phone is not registered as connected everywhere")
			}
		}
		return nil
	})
	f.sender = &mqttSender{c: mustConnectV5(t, nodes[2].MQTTAddr(), "alice", "laptop", aliceTok)}
	start := time.Now()
	id := f.send(t, "user/bob/newMessage", "between two cells")
	old.nextPublish(t)
	_, ca, err := mqtttest.Dial(t, other.MQTTAddr(), mqtttest.Options{ClientID: "bob/phone", Username: "bob", Password: bobTok,
		KeepSession: true, SessionExpiry: 3600})
	if err != nil {
		t.Fatal(err)
	}
	if ca.SessionPresent {
		t.Fatal("a session moved between nodes")
	}
	if el := f.firstPush(t, id, start); el >= flowAckTimeout {
		t.Errorf("pushed %v after the commit: not at the takeover, before the bound of %v", el, flowAckTimeout)
	}
	outboxesEmpty(t, nodes)
	if n := f.pushesFor(f.phone, id); n != 1 {
		t.Fatalf("%d pushes for one message", n)
	}
}
