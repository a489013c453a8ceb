package node_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	pushbridge "github.com/edgechat/edgechat/bridge/push"
	"github.com/edgechat/edgechat/bridge/push/pushtest"
	"github.com/edgechat/edgechat/internal/snowflake"
	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/internal/testutil/mqtttest"
	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
)

// pushFlow is a node with every provider against the mocks, a short
// grace period, and bob's phone registered for APNs.
type pushFlow struct {
	n          *nodetest.Node
	m          pushMocks
	alice, bob string // tokens
	phone      string // bob's phone's APNs token
	sender     *mqttSender
}

const flowGrace = 600 * time.Millisecond

// flowAckTimeout is the flow's --push-ack-timeout: a connected device
// that has not acknowledged a message by then is pushed.
const flowAckTimeout = 1500 * time.Millisecond

func startPushFlow(t *testing.T, groupLimit int) *pushFlow {
	t.Helper()
	return startPushFlowGrace(t, groupLimit, flowGrace)
}

// startPushFlowGrace is startPushFlow with a push grace period of grace.
func startPushFlowGrace(t *testing.T, groupLimit int, grace time.Duration) *pushFlow {
	t.Helper()
	opt, m := withPushMocks(t)
	f := &pushFlow{m: m, phone: pushtest.NewDeviceToken()}
	f.n = nodetest.StartNode(t, opt, nodetest.WithConfig(func(c *node.Config) {
		c.PushGrace = grace
		c.PushAckTimeout = flowAckTimeout
		if groupLimit > 0 {
			c.PushGroupLimit = groupLimit
		}
	}))
	f.alice, f.bob = f.n.NewUser(t, "alice"), f.n.NewUser(t, "bob")
	if st := api(t, f.n, f.bob, "POST", "/user/me/devices",
		map[string]any{"device": "phone", "platform": "apns", "token": f.phone}, nil); st != 200 {
		t.Fatalf("register the phone: %d", st)
	}
	f.sender = &mqttSender{c: mustConnectV5(t, f.n.MQTTAddr(), "alice", "laptop", f.alice)}
	return f
}

// mqttSender publishes alice's messages and returns their IDs.
type mqttSender struct {
	c *mqtttest.Client
	n int
}

// send publishes a message to topic and returns the stored ID (from the
// PUBACK's user property).
func (s *mqttSender) send(t *testing.T, topic, body string) string {
	t.Helper()
	s.n++
	code, resp := s.c.Pub(t, topic, 1, textMsg(fmt.Sprintf("flow-%d", s.n), body))
	if code != 0 || resp == nil {
		t.Fatalf("publish to %s: reason %#x", topic, code)
	}
	id := resp.Properties.User.Get("id")
	if id == "" {
		t.Fatalf("PUBACK without the message id: %+v", resp.Properties)
	}
	return id
}

// pushesFor are the APNs requests for token that carry message id.
func (f *pushFlow) pushesFor(token, id string) int { return f.m.apnsPushes(token, id) }

// decided waits until the sender has decided verdict for want devices in
// all (the counter only grows).
func (f *pushFlow) decided(t *testing.T, verdict string, want float64) {
	t.Helper()
	checkFor(t, 15*time.Second, 20*time.Millisecond, func() error {
		v, _ := testutil.MetricValue(t, f.n.Registry(), "edgechat_push_decisions_total", map[string]string{"verdict": verdict})
		if v != want {
			return fmt.Errorf("%s decisions = %v, want %v", verdict, v, want)
		}
		return nil
	})
}

// outboxEmpty waits until the outbox has nothing left (every message
// done and recorded).
func (f *pushFlow) outboxEmpty(t *testing.T) {
	t.Helper()
	checkFor(t, 15*time.Second, 20*time.Millisecond, func() error {
		n := 0
		_ = f.n.Push.EachQueued(func(_ snowflake.ID) bool { n++; return true })
		if n != 0 {
			return fmt.Errorf("%d messages still in the outbox", n)
		}
		return nil
	})
}

// firstPush waits for a push of message id to the phone and returns how
// long after since it came.
func (f *pushFlow) firstPush(t *testing.T, id string, since time.Time) time.Duration {
	t.Helper()
	checkFor(t, 15*time.Second, 20*time.Millisecond, func() error {
		if f.pushesFor(f.phone, id) == 0 {
			return errors.New("no push yet")
		}
		return nil
	})
	return time.Since(since)
}

// onlyPush waits until the outbox is empty (nothing can push id again)
// and checks that the phone got one push for it.
func (f *pushFlow) onlyPush(t *testing.T, id string) {
	t.Helper()
	f.outboxEmpty(t)
	if n := f.pushesFor(f.phone, id); n != 1 {
		t.Fatalf("%d pushes for one message", n)
	}
}

// outboxesEmpty waits until no node of a cluster has a message left in
// its outbox.
func outboxesEmpty(t *testing.T, nodes []*nodetest.Node) {
	t.Helper()
	checkFor(t, 15*time.Second, 20*time.Millisecond, func() error {
		for _, n := range nodes {
			queued := 0
			_ = n.Push.EachQueued(func(_ snowflake.ID) bool { queued++; return true })
			if queued != 0 {
				return fmt.Errorf("%d messages still in the outbox of a node", queued)
			}
		}
		return nil
	})
}

func TestPushOfflineDeviceOnceAfterGrace(t *testing.T) {
	f := startPushFlow(t, 0)
	start := time.Now()
	id := f.send(t, "user/bob/newMessage", "are you there?")
	if el := f.firstPush(t, id, start); el < flowGrace {
		t.Errorf("pushed after %v, before the grace period of %v", el, flowGrace)
	}
	f.outboxEmpty(t) // done and recorded: nothing can send it again
	if n := f.pushesFor(f.phone, id); n != 1 {
		t.Fatalf("%d pushes for one message", n)
	}
	var r pushtest.APNsRequest
	for _, q := range f.m.apns.Requests() {
		if q.Custom["messageId"] == id {
			r = q
		}
	}
	alert, _ := r.APS["alert"].(map[string]any)
	if r.Status != 200 || r.PushType != "alert" || r.Topic != "com.example.chat" || r.CollapseID != "user:alice" ||
		alert["title"] != "Alice" || alert["body"] != "are you there?" || r.APS["badge"] != float64(1) ||
		r.APS["mutable-content"] != float64(1) || r.APS["thread-id"] != "user:alice" ||
		r.Custom["conversationId"] != "user:alice" {
		t.Errorf("APNs request %+v", r)
	}
	checkMetric(t, f.n, "edgechat_push_decisions_total", map[string]string{"verdict": "push"}, 1)
	if c, _ := testutil.MetricValue(t, f.n.Registry(), "edgechat_push_latency_seconds", nil); c != 1 {
		t.Errorf("latency observations = %v", c)
	}
}

func (f *pushFlow) send(t *testing.T, topic, body string) string {
	return f.sender.send(t, topic, body)
}

func TestPushNotForAConnectedDevice(t *testing.T) {
	f := startPushFlow(t, 0)
	phone := mustConnectV5(t, f.n.MQTTAddr(), "bob", "phone", f.bob)
	phone.Sub(t, "user/bob/newMessage")
	id := f.send(t, "user/bob/newMessage", "you are online")
	f.decided(t, "connected", 1)
	f.outboxEmpty(t)
	if n := f.pushesFor(f.phone, id); n != 0 {
		t.Fatalf("a connected device got %d pushes", n)
	}
}

func TestPushNotWhenTheDeviceReconnectsWithinGrace(t *testing.T) {
	f := startPushFlow(t, 0)
	// A persistent session: the phone gets what it missed on reconnect.
	phone := mustConnectV5(t, f.n.MQTTAddr(), "bob", "phone", f.bob)
	phone.Sub(t, "user/bob/newMessage")
	_ = phone.Client.Disconnect(&paho.Disconnect{ReasonCode: 0})
	waitDisconnected(t, f, "bob/phone")
	id := f.send(t, "user/bob/newMessage", "catch this on reconnect")
	phone = mustConnectV5(t, f.n.MQTTAddr(), "bob", "phone", f.bob)
	phone.Sub(t, "user/bob/newMessage")
	f.decided(t, "connected", 1)
	f.outboxEmpty(t)
	if n := f.pushesFor(f.phone, id); n != 0 {
		t.Fatalf("a device back within the grace period got %d pushes", n)
	}
}

func TestPushNotWhenReadOnAnotherDevice(t *testing.T) {
	f := startPushFlow(t, 0)
	laptop := mustConnectV5(t, f.n.MQTTAddr(), "bob", "laptop", f.bob)
	laptop.Sub(t, "user/bob/newMessage")
	id := f.send(t, "user/bob/newMessage", "read me on the laptop")
	if st := api(t, f.n, f.bob, "POST", "/chat/read", map[string]any{"with": "alice", "upTo": id}, nil); st != 204 {
		t.Fatalf("mark read: %d", st)
	}
	f.decided(t, "read", 1)
	f.outboxEmpty(t)
	if n := f.pushesFor(f.phone, id); n != 0 {
		t.Fatalf("the phone got %d pushes for a message read on the laptop", n)
	}
}

func TestPushNotForAMutedConversation(t *testing.T) {
	f := startPushFlow(t, 0)
	if st := api(t, f.n, f.bob, "PUT", "/user/me/mutes/user:alice", nil, nil); st != 200 {
		t.Fatalf("mute: %d", st)
	}
	id := f.send(t, "user/bob/newMessage", "muted")
	f.decided(t, "muted", 1)
	f.outboxEmpty(t)
	if n := f.pushesFor(f.phone, id); n != 0 {
		t.Fatalf("a muted conversation pushed %d times", n)
	}
	// Unmuted, the next message pushes again.
	if st := api(t, f.n, f.bob, "DELETE", "/user/me/mutes/user:alice", nil, nil); st != 204 {
		t.Fatalf("unmute: %d", st)
	}
	id = f.send(t, "user/bob/newMessage", "unmuted")
	checkFor(t, 15*time.Second, 20*time.Millisecond, func() error {
		if f.pushesFor(f.phone, id) != 1 {
			return errors.New("no push after unmute")
		}
		return nil
	})
}

// In a group above the limit only mentions (and replies, and members who
// opted in) push; in a small group everyone does.
func TestPushLargeGroupOnlyMentions(t *testing.T) {
	f := startPushFlow(t, 2)
	carol := f.n.NewUser(t, "carol")
	carolPhone := pushtest.NewDeviceToken()
	if st := api(t, f.n, carol, "POST", "/user/me/devices",
		map[string]any{"device": "phone", "platform": "apns", "token": carolPhone}, nil); st != 200 {
		t.Fatalf("register carol's phone: %d", st)
	}
	g := createGroup(t, f.n, f.alice, "big", "bob", "carol") // 3 members > 2
	topic := "group/" + g.GroupID + "/newMessage"
	plain := f.send(t, topic, "hello everyone")
	mention := f.send(t, topic, "@bob can you look?")
	checkFor(t, 15*time.Second, 20*time.Millisecond, func() error {
		if f.pushesFor(f.phone, mention) != 1 {
			return errors.New("bob not pushed for his mention")
		}
		return nil
	})
	f.outboxEmpty(t)
	if n := f.pushesFor(f.phone, plain) + f.pushesFor(carolPhone, plain) + f.pushesFor(carolPhone, mention); n != 0 {
		t.Fatalf("%d pushes that are not mentions in a large group", n)
	}
	var r pushtest.APNsRequest
	for _, q := range f.m.apns.Requests() {
		if q.Custom["messageId"] == mention {
			r = q
		}
	}
	alert, _ := r.APS["alert"].(map[string]any)
	if alert["title"] != "Alice in big" || r.CollapseID != "group:"+g.GroupID {
		t.Errorf("group push %+v", r)
	}
	// Carol opts in: she gets every message of the group.
	if st := api(t, f.n, carol, "PUT", "/user/me/push/groups/"+g.GroupID, nil, nil); st != 200 {
		t.Fatalf("opt in: %d", st)
	}
	all := f.send(t, topic, "for the opted in")
	checkFor(t, 15*time.Second, 20*time.Millisecond, func() error {
		if f.pushesFor(carolPhone, all) != 1 {
			return errors.New("carol not pushed after opting in")
		}
		return nil
	})
	f.outboxEmpty(t)
	if n := f.pushesFor(f.phone, all); n != 0 {
		t.Fatalf("bob, not opted in, got %d pushes", n)
	}
}

// waitDisconnected waits until the cluster no longer sees clientID
// connected.
func waitDisconnected(t *testing.T, f *pushFlow, clientID string) {
	t.Helper()
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if f.n.ClientConnected(clientID) {
			return errors.New(clientID + " still registered as connected")
		}
		return nil
	})
}

// One message reaches every provider a user's offline devices use, each
// with the conversation's collapse key and the message ID; the device
// whose token APNs reports dead loses its registration.
func TestPushEveryProviderAndDeadTokenRemoval(t *testing.T) {
	f := startPushFlow(t, 0)
	var vapid string
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if vapid = vapidKey(t, f.n); vapid == "" {
			return errors.New("no VAPID key yet")
		}
		return nil
	})
	wp := pushtest.StartWebPush(t, vapid)
	sub := wp.Subscribe()
	oldPhone, pixel := pushtest.NewDeviceToken(), fcmToken("flow")
	f.m.apns.Fail(oldPhone, pushtest.Unregistered)
	for _, reg := range []map[string]any{
		{"device": "old-phone", "platform": "apns", "token": oldPhone},
		{"device": "pixel", "platform": "fcm", "token": pixel},
		{"device": "browser", "platform": "webpush", "subscription": map[string]any{"endpoint": sub.Endpoint,
			"keys": map[string]string{"p256dh": sub.P256dh, "auth": sub.Auth}}},
	} {
		if st := api(t, f.n, f.bob, "POST", "/user/me/devices", reg, nil); st != 200 {
			t.Fatalf("register %v: %d", reg["device"], st)
		}
	}
	id := f.send(t, "user/bob/newMessage", "to every device")
	f.outboxEmpty(t)
	if n := f.pushesFor(f.phone, id); n != 1 {
		t.Errorf("APNs phone: %d pushes", n)
	}
	var fcm []pushtest.FCMRequest
	for _, r := range f.m.fcm.Requests() {
		if r.Message.Data["messageId"] == id {
			fcm = append(fcm, r)
		}
	}
	if len(fcm) != 1 || fcm[0].Status != 200 || fcm[0].Message.Token != pixel ||
		fcm[0].Message.Android.CollapseKey != "user:alice" || fcm[0].Message.Notification.Body != "to every device" {
		t.Errorf("FCM requests %+v", fcm)
	}
	var web []pushbridge.WebPushPayload
	for _, r := range wp.Requests() {
		var p pushbridge.WebPushPayload
		if err := jsonUnmarshal(r.Payload, &p); err == nil && p.MessageID == id && r.Status == 201 {
			web = append(web, p)
			if r.Topic == "" {
				t.Errorf("Web Push without a Topic (collapse) header: %+v", r)
			}
		}
	}
	if len(web) != 1 || web[0].Body != "to every device" || web[0].Title != "Alice" {
		t.Errorf("Web Push payloads %+v (errors %v)", web, wp.Errors())
	}
	var list deviceList
	if st := api(t, f.n, f.bob, "GET", "/user/me/devices", nil, &list); st != 200 {
		t.Fatalf("list: %d", st)
	}
	for _, d := range list.Devices {
		if d.Device == "old-phone" {
			t.Errorf("the dead token's registration is still there")
		}
	}
	checkMetric(t, f.n, "edgechat_push_tokens_removed_total", map[string]string{"provider": "apns"}, 1)
}
