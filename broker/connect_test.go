package broker

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/internal/testutil/mqtttest"
	"github.com/edgechat/edgechat/internal/wire"
)

type connectCase struct {
	name               string
	clientID, user, pw string
	v5, v3             byte
}

var connectCases = []connectCase{
	{"valid", "alice/phone", "alice", "tok:alice", 0x00, 0},
	{"no credentials", "alice/phone", "", "", 0x87, 5},
	{"username without token", "alice/phone", "alice", "", 0x87, 5},
	{"forged token", "alice/phone", "alice", "garbage", 0x86, 4},
	{"expired token", "alice/phone", "alice", "expired", 0x86, 4},
	{"token of another user", "alice/phone", "alice", "tok:bob", 0x86, 4},
	{"token that cannot be checked now", "alice/phone", "alice", "unavailable", 0x88, 3},
	{"client id of another user", "bob/phone", "alice", "tok:alice", 0x85, 2},
	{"client id without device", "alice", "alice", "tok:alice", 0x85, 2},
	{"client id uppercase", "Alice/phone", "alice", "tok:alice", 0x85, 2},
	{"client id with wildcard", "alice/ph+one", "alice", "tok:alice", 0x85, 2},
}

func TestConnectV5ReasonCodes(t *testing.T) {
	e := startBroker(t, nil)
	for _, tc := range connectCases {
		t.Run(tc.name, func(t *testing.T) {
			_, ca, err := mqtttest.Dial(t, e.addr, mqtttest.Options{ClientID: tc.clientID, Username: tc.user, Password: tc.pw})
			if ca == nil {
				t.Fatalf("no CONNACK: %v", err)
			}
			if ca.ReasonCode != tc.v5 {
				t.Fatalf("reason code 0x%02x, want 0x%02x (err %v)", ca.ReasonCode, tc.v5, err)
			}
			if tc.v5 != 0 && (ca.Properties == nil || ca.Properties.ReasonString == "") {
				t.Errorf("refusal without a reason string")
			}
		})
	}
	if got := testutil.CounterValue(t, e.b.m.refused.WithLabelValues("connect_client_id")); got != 4 {
		t.Errorf("refused{connect_client_id} = %v, want 4", got)
	}
}

func TestConnectV3ReturnCodes(t *testing.T) {
	e := startBroker(t, nil)
	for _, tc := range connectCases {
		t.Run(tc.name, func(t *testing.T) {
			_, code, err := dialV3(t, e.addr, tc.clientID, tc.user, tc.pw)
			if code != tc.v3 {
				t.Fatalf("return code %d, want %d (err %v)", code, tc.v3, err)
			}
			if (err == nil) != (tc.v3 == 0) {
				t.Fatalf("err %v with code %d", err, code)
			}
		})
	}
}

func TestConnectWillOnChatTopicRefused(t *testing.T) {
	e := startBroker(t, nil)
	conn, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	_, ca, _ := mqtttest.Connect(t, conn, mqtttest.Options{ClientID: "alice/phone", Username: "alice", Password: "tok:alice", Will: &paho.WillMessage{Topic: "user/bob/newMessage", Payload: []byte(`{"cid":"w","type":"text","body":"x"}`)}})
	if ca == nil || ca.ReasonCode != 0x87 {
		t.Fatalf("connack %+v, want 0x87", ca)
	}
}

func TestACLMatrix(t *testing.T) {
	e := startBroker(t, nil)
	alice := mustV5(t, e.addr, "alice", "phone")
	for _, tc := range []struct {
		filter string
		ok     bool
	}{
		{"user/alice/newMessage", true},
		{"user/alice/typing", true},
		{"user/alice/receipts", true},
		{"user/alice/events", true},
		{"user/alice/#", true},
		{"user/alice/+", true},
		{"presence/alice", true},
		{"presence/bob", true}, // alice may see bob (fake visibility)
		{"user/bob/newMessage", false},
		{"user/bob/events", false},
		{"user/bob/#", false},
		{"user/+/newMessage", false},
		{"user/#", false},
		{"#", false},
		{"+/alice/newMessage", false},
		{"presence/carol", false},
		{"presence/+", false},
		{"presence/#", false},
		{"presence/alice/heartbeat", false},
		{"presence/bob/heartbeat", false},
		{"group/g1/newMessage", false},
		{"$SHARE/g/user/bob/newMessage", false},
		{"$SYS/#", false},
		{"$SYS/broker/version", false},
		{"sensors/t1", false}, // non-chat topics are closed outside dev mode
		{"user/alice/newMessage/x", false},
	} {
		code := alice.Sub(t, tc.filter)[0]
		if ok := code < 0x80; ok != tc.ok {
			t.Errorf("subscribe %q: reason 0x%02x, want allowed=%v", tc.filter, code, tc.ok)
		}
		if !tc.ok && code != 0x87 {
			t.Errorf("subscribe %q: reason 0x%02x, want 0x87", tc.filter, code)
		}
	}
	for _, tc := range []struct {
		topic string
		ok    bool
	}{
		{"presence/alice", false},
		{"presence/bob", false},
		{"user/alice/events", false},
		{"user/bob/events", false},
		{"presence/bob/heartbeat", false},
		{"presence/alice/heartbeat", true},
		{"group/g1/newMessage", false},
		{"sensors/t1", false},
		{"user/bob", false},
	} {
		code, _ := alice.Pub(t, tc.topic, 1, "")
		if ok := code < 0x80; ok != tc.ok {
			t.Errorf("publish %q: reason 0x%02x, want allowed=%v", tc.topic, code, tc.ok)
		}
	}

	// $SYS: admins may subscribe.
	root, _, err := mqtttest.Dial(t, e.addr, mqtttest.Options{ClientID: "root/console", Username: "root", Password: "tok:root:admin"})
	if err != nil {
		t.Fatal(err)
	}
	if code := root.Sub(t, "$SYS/#")[0]; code >= 0x80 {
		t.Fatalf("admin $SYS subscribe: 0x%02x", code)
	}
	if m := root.Next(t); !strings.HasPrefix(m.Topic, "$SYS/") {
		t.Fatalf("admin got %q", m.Topic)
	}

	// 3.1.1: a refused subscription is 0x80.
	if got := v3SubCode(t, e.addr, "alice", "user/bob/newMessage"); got != 0x80 {
		t.Fatalf("v3 suback %#x, want 0x80", got)
	}
}

// Presence is published by the server (retained, with user properties)
// and the ACL runs on each delivery, so a revoked visibility stops
// deliveries at once.
func TestPresenceDeliveryAndRevokedVisibility(t *testing.T) {
	e := startBroker(t, nil)
	alice := mustV5(t, e.addr, "alice", "phone")
	alice.MustSub(t, "presence/bob")
	alice.MustSub(t, "presence/alice")
	online, _ := json.Marshal(wire.Presence{Status: wire.StatusOnline, LastSeen: time.Unix(1, 0).UTC()})
	pub := func(uid string) {
		t.Helper()
		if err := e.b.Publish(wire.Outbound{Topic: wire.PresenceTopic(uid), Payload: online, Retain: true, QoS: 1,
			UserProps: []wire.Prop{{Key: "status", Value: "online"}}}); err != nil {
			t.Fatal(err)
		}
	}
	pub("bob")
	m := alice.Next(t)
	if m.Topic != "presence/bob" || string(m.Payload) != string(online) || m.Properties.User.Get("status") != "online" {
		t.Fatalf("got %s %q props %+v", m.Topic, m.Payload, m.Properties.User)
	}
	if len(e.b.Server().Topics.Messages("presence/bob")) != 1 {
		t.Fatalf("presence not retained")
	}
	e.vis.set("alice", "bob", false)
	pub("bob")
	pub("alice") // barrier: delivered after whatever bob's would have been
	if m := alice.Next(t); m.Topic != "presence/alice" {
		t.Fatalf("revoked presence still delivered: %s", m.Topic)
	}
	if err := e.b.Publish(wire.Outbound{Topic: "user/+/events"}); err == nil {
		t.Fatal("Publish accepted a wildcard topic")
	}
}

func TestPresenceConnectionsAndTakeover(t *testing.T) {
	e := startBroker(t, nil)
	c1 := mustV5(t, e.addr, "alice", "phone")
	testutil.CheckFor(t, waitFor, 10*time.Millisecond, func() error {
		if n := e.b.Connections(); n != 1 {
			return fmt.Errorf("connections %d", n)
		}
		return nil
	})
	mustV5(t, e.addr, "alice", "phone") // takes the session over
	var ev []string
	testutil.CheckFor(t, waitFor, 10*time.Millisecond, func() error {
		ev = e.pres.get()
		if len(ev) != 3 {
			return fmt.Errorf("events %q", ev)
		}
		return nil
	})
	id1 := strings.TrimPrefix(ev[0], "connected alice ")
	var id2 string
	for _, s := range ev[1:] {
		if strings.HasPrefix(s, "connected alice ") {
			id2 = strings.TrimPrefix(s, "connected alice ")
		}
	}
	if id1 == ev[0] || id2 == "" || id1 == id2 {
		t.Fatalf("connIDs not distinct: %q", ev)
	}
	if !contains(ev, "disconnected alice "+id1) {
		t.Fatalf("old connection not disconnected: %q", ev)
	}
	if !strings.HasPrefix(id1, "alice/phone#") {
		t.Fatalf("connID %q", id1)
	}
	select {
	case <-c1.Done():
	case <-time.After(waitFor):
		t.Fatal("taken-over client still connected")
	}
	if n := e.b.Connections(); n != 1 {
		t.Fatalf("connections %d after takeover", n)
	}
	e.close()
	testutil.CheckFor(t, waitFor, 10*time.Millisecond, func() error {
		if !contains(e.pres.get(), "disconnected alice "+id2) {
			return fmt.Errorf("events %q", e.pres.get())
		}
		return nil
	})
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// Garbage on a socket closes that connection; the server keeps serving.
func TestMalformedPacketClosesConnection(t *testing.T) {
	e := startBroker(t, nil)
	for _, raw := range [][]byte{
		{0xff, 0xff, 0xff, 0xff, 0xff, 0x01},                        // reserved packet type, broken length
		{0x30, 0x02, 0x00, 0x01},                                    // PUBLISH before CONNECT
		{0x10, 0xff, 0xff, 0xff, 0xff, 0x7f},                        // CONNECT with an invalid remaining length
		{0x10, 0x0a, 'M', 'Q', 'T', 'X', 4, 2, 0, 0, 0, 0},          // wrong protocol name
		append([]byte{0x10, 0xff, 0xff, 0x7f}, make([]byte, 64)...), // 2 MB CONNECT: over MaxPacketSize
	} {
		conn, err := net.Dial("tcp", e.addr)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Write(raw); err != nil {
			t.Fatal(err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(waitFor))
		r := bufio.NewReader(conn)
		for {
			if _, err = r.ReadByte(); err != nil {
				break // the server may answer a CONNACK first; then it must close
			}
		}
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatalf("% x: connection not closed", raw[:4])
		}
		conn.Close()
	}
	mustV5(t, e.addr, "alice", "phone") // still serving
}
