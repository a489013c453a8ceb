package broker

import (
	"context"

	"errors"
	"fmt"
	"github.com/eclipse/paho.golang/paho"
	"strings"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/internal/testutil/mqtttest"
	"github.com/edgechat/edgechat/internal/wire"
)

// A chat message too large for the recipient's MQTT 5 Maximum Packet
// Size cannot be sent to it [MQTT-3.1.2-24]; dropped without a word, the
// client never learned it missed one (message IDs have gaps) until some
// later sync. As for a message that does not fit its queue, the node
// closes the connection with 0x89 so that the client syncs, where a
// message of any size reaches it.
func TestAChatMessageTooLargeForTheClientMakesItSync(t *testing.T) {
	for _, aliases := range []bool{false, true} {
		t.Run(fmt.Sprintf("aliases=%v", aliases), func(t *testing.T) { tooLargeMakesItSync(t, aliases) })
	}
}

// tooLargeMakesItSync: with aliases, bob lets the server send topics by
// alias, and the message too large goes after one that set the alias
// (its drop then names its topic by alias only).
func tooLargeMakesItSync(t *testing.T, aliases bool) {
	e := startBroker(t, nil)
	o := mqtttest.Options{ClientID: "bob/small", Username: "bob", Password: "tok:bob", MaximumPacketSize: 1024}
	if aliases {
		o.TopicAliasMaximum = 10
	}
	bob, _, err := mqtttest.Dial(t, e.addr, o)
	if err != nil {
		t.Fatal(err)
	}
	bob.MustSub(t, "user/bob/newMessage")
	alice := mustV5(t, e.addr, "alice", "d1")
	if aliases {
		if code, _ := alice.Pub(t, "user/bob/newMessage", 1, `{"cid":"first","type":"text","body":"hi"}`); code != 0 {
			t.Fatalf("first message: reason %#x", code)
		}
		bob.Next(t)
	}
	long := strings.Repeat("x", 2000)
	if code, _ := alice.Pub(t, "user/bob/newMessage", 1, `{"cid":"long","type":"text","body":"`+long+`"}`); code != 0 {
		t.Fatalf("long message: reason %#x", code)
	}
	if code, _ := alice.Pub(t, "user/bob/newMessage", 1, `{"cid":"short","type":"text","body":"hi"}`); code != 0 {
		t.Fatalf("short message: reason %#x", code)
	}
	testutil.CheckFor(t, waitFor, 10*time.Millisecond, func() error {
		if reason, ok := bob.ServerDisconnect(); !ok || reason != 0x89 {
			got := bob.Received("")
			var cids []string
			for _, m := range got {
				cids = append(cids, string(m.Payload[strings.Index(string(m.Payload), `"cid"`):][:14]))
			}
			return fmt.Errorf("bob's connection: DISCONNECT %#x (sent: %v), received %d messages %v; want DISCONNECT 0x89 so that he syncs the message too large for him", reason, ok, len(got), cids)
		}
		return nil
	})
	class := wire.KindDirect.String()
	if n := metric(t, e, "edgechat_mqtt_messages_dropped_total", map[string]string{"class": class, "reason": "too_large"}); n != 1 {
		t.Errorf("dropped %s too_large: %v, want 1", class, n)
	}
}

// The same message queued for bob's persistent session while he was
// away: resent when the session resumes, it failed the resend, which
// ended the connection right after its CONNACK, and every reconnection
// resuming the session failed the same way. The node drops it, tells the
// client to sync (0x89) and ends the session, so the next connection
// starts anew (session present 0) and stays.
func TestAQueuedMessageTooLargeForTheClientDoesNotBlockItsSession(t *testing.T) {
	e := startBroker(t, nil)
	opts := mqtttest.Options{ClientID: "bob/small", Username: "bob", Password: "tok:bob", MaximumPacketSize: 1024,
		KeepSession: true, SessionExpiry: 3600}
	bob, _, err := mqtttest.Dial(t, e.addr, opts)
	if err != nil {
		t.Fatal(err)
	}
	bob.MustSub(t, "user/bob/newMessage")
	_ = bob.Conn.Close() // away, the session kept
	testutil.CheckFor(t, waitFor, 10*time.Millisecond, func() error {
		if e.b.Connections() != 0 {
			return errors.New("bob still connected")
		}
		return nil
	})
	alice := mustV5(t, e.addr, "alice", "d1")
	long := strings.Repeat("x", 2000)
	if code, _ := alice.Pub(t, "user/bob/newMessage", 1, `{"cid":"long","type":"text","body":"`+long+`"}`); code != 0 {
		t.Fatalf("long message: reason %#x", code)
	}
	for i := range 3 {
		if err := bobStaysAfterResuming(t, e, alice, opts, i); err != nil {
			t.Logf("reconnection %d: %v", i, err)
			continue
		}
		return
	}
	t.Fatal("no reconnection got a message: the session held one too large for the client")
}

// bobStaysAfterResuming connects bob with opts, subscribes and checks
// that a short message from alice reaches him.
func bobStaysAfterResuming(t *testing.T, e *testEnv, alice *mqtttest.Client, opts mqtttest.Options, i int) error {
	opts.Timeout = 5 * time.Second
	bob, ca, err := mqtttest.Open(e.addr, opts)
	if err != nil {
		return err
	}
	defer func() { _ = bob.Disconnect(&paho.Disconnect{}) }()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := bob.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "user/bob/newMessage", QoS: 1}}}); err != nil {
		reason, told := bob.ServerDisconnect()
		return fmt.Errorf("session present %v; subscribe: %v (DISCONNECT %#x sent: %v)", ca.SessionPresent, err, reason, told)
	}
	cid := fmt.Sprintf("short%d", i)
	if code, _ := alice.Pub(t, "user/bob/newMessage", 1, `{"cid":"`+cid+`","type":"text","body":"hi"}`); code != 0 {
		t.Fatalf("short message: reason %#x", code)
	}
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		for _, m := range bob.Received("") {
			if strings.Contains(string(m.Payload), cid) {
				return nil
			}
		}
		if _, told := bob.ServerDisconnect(); told {
			break
		}
		time.Sleep(10 * time.Millisecond) // polling bob's record
	}
	reason, told := bob.ServerDisconnect()
	return fmt.Errorf("session present %v; %s not received (DISCONNECT %#x sent: %v)", ca.SessionPresent, cid, reason, told)
}
