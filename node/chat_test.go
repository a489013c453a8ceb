package node_test

import (
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgechat/edgechat/node/nodetest"
	"github.com/edgechat/edgechat/services/auth"
)

type historyPage struct {
	Messages []envelope `json:"messages"`
	HasMore  bool       `json:"hasMore"`
}

type syncPage struct {
	Messages []envelope `json:"messages"`
	Cursor   string     `json:"cursor"`
	HasMore  bool       `json:"hasMore"`
}

type conversations struct {
	Conversations []struct {
		Peer        string   `json:"peer"`
		LastMessage envelope `json:"lastMessage"`
		Unread      int      `json:"unread"`
	} `json:"conversations"`
}

func TestDirectMessageV5OverTCP(t *testing.T) {
	n := nodetest.StartNode(t)
	aliceTok, bobTok := n.NewUser(t, "alice"), n.NewUser(t, "bob")
	bob := mustConnectV5(t, n.MQTTURL, "bob", "phone", bobTok)
	if r := bob.Sub(t, "user/bob/#"); r[0] > 2 {
		t.Fatalf("bob cannot subscribe to his own subtree: %#x", r[0])
	}
	alice := mustConnectV5(t, n.MQTTURL, "alice", "laptop", aliceTok)
	aliceTablet := mustConnectV5(t, n.MQTTURL, "alice", "tablet", aliceTok)
	aliceTablet.Sub(t, "user/alice/newMessage")

	// The client tries to spoof from/to/id; the server overwrites them.
	code, _ := alice.Pub(t, "user/bob/newMessage", 1, `{"cid":"c1","type":"text","body":"hello bob","from":"mallory","to":"carol","id":"1"}`)
	if code != 0 {
		t.Fatalf("PUBACK reason %#x", code)
	}
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if len(bob.Received("user/bob/newMessage")) != 1 {
			return errors.New("bob has not received the message")
		}
		return nil
	})
	got := bob.Received("user/bob/newMessage")[0]
	env := decodeEnvelope(t, got.Payload)
	if env.From != "alice" || env.To != "bob" || env.Body != "hello bob" || env.CID != "c1" || env.ID == "" || env.ID == "1" {
		t.Fatalf("delivered envelope %+v", env)
	}
	if got.Properties == nil || got.Properties.User.Get("id") != env.ID || got.Properties.User.Get("from") != "alice" {
		t.Fatalf("v5 user properties missing: %+v", got.Properties)
	}
	// The sender's other device gets a copy with the same id.
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		c := aliceTablet.Received("user/alice/newMessage")
		if len(c) != 1 {
			return fmt.Errorf("alice's tablet got %d copies", len(c))
		}
		if e := decodeEnvelope(t, c[0].Payload); e.ID != env.ID || e.To != "bob" {
			return fmt.Errorf("copy %+v", e)
		}
		return nil
	})
	// The message is in history for both.
	var page historyPage
	if st := api(t, n, bobTok, "GET", "/chat/history?with=alice", nil, &page); st != 200 || len(page.Messages) != 1 || page.Messages[0].ID != env.ID {
		t.Fatalf("history %d %+v", st, page)
	}
}

func TestMQTT311ClientReceivesAndSends(t *testing.T) {
	n := nodetest.StartNode(t)
	aliceTok, bobTok := n.NewUser(t, "alice"), n.NewUser(t, "bob")
	for _, transport := range []string{"tcp", "ws"} {
		t.Run(transport, func(t *testing.T) {
			url := n.MQTTURL
			if transport == "ws" {
				url = n.WSURL
			}
			got := make(chan []byte, 10)
			opts := mqtt3.NewClientOptions().AddBroker(url).SetClientID("bob/old-" + transport).
				SetUsername("bob").SetPassword(bobTok).SetProtocolVersion(4).SetAutoReconnect(false)
			bob := mqtt3.NewClient(opts)
			if tok := bob.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
				t.Fatalf("3.1.1 connect over %s: %v", transport, tok.Error())
			}
			defer bob.Disconnect(100)
			if tok := bob.Subscribe("user/bob/newMessage", 1, func(_ mqtt3.Client, m mqtt3.Message) { got <- m.Payload() }); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
				t.Fatalf("subscribe: %v", tok.Error())
			}
			alice := mustConnectV5(t, n.MQTTURL, "alice", "v5-"+transport, aliceTok)
			if code, _ := alice.Pub(t, "user/bob/newMessage", 1, textMsg("to-311-"+transport, "hi old client")); code != 0 {
				t.Fatalf("PUBACK %#x", code)
			}
			select {
			case p := <-got:
				if e := decodeEnvelope(t, p); e.From != "alice" || e.Body != "hi old client" {
					t.Fatalf("got %+v", e)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("3.1.1 client received nothing")
			}
			// And the 3.1.1 client sends: a QoS 1 publish is acked after commit.
			alice.Sub(t, "user/alice/newMessage")
			if tok := bob.Publish("user/alice/newMessage", 1, false, textMsg("from-311-"+transport, "reply")); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
				t.Fatalf("3.1.1 publish: %v", tok.Error())
			}
			checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
				for _, m := range alice.Received("user/alice/newMessage") {
					if e := decodeEnvelope(t, m.Payload); e.From == "bob" && e.CID == "from-311-"+transport {
						return nil
					}
				}
				return errors.New("alice did not get the 3.1.1 client's message")
			})
		})
	}
}

func TestACLMatrix(t *testing.T) {
	n := nodetest.StartNode(t)
	rootTok := n.NewUser(t, "root") // the first account is the admin
	aliceTok, bobTok := n.NewUser(t, "alice"), n.NewUser(t, "bob")
	_ = n.NewUser(t, "carol")
	alice := mustConnectV5(t, n.MQTTURL, "alice", "d1", aliceTok)

	subs := map[string]bool{ // filter → allowed
		"user/alice/newMessage":  true,
		"user/alice/#":           true,
		"user/bob/newMessage":    false,
		"user/bob/#":             false,
		"user/+/newMessage":      false,
		"#":                      false,
		"presence/alice":         true,
		"presence/carol":         false, // no conversation with carol
		"presence/bob/heartbeat": false,
		"$SYS/#":                 false,
		"random/topic":           false,
	}
	root := mustConnectV5(t, n.MQTTURL, "root", "console", rootTok)
	if r := root.Sub(t, "$SYS/#"); r[0] > 2 {
		t.Errorf("admin cannot read $SYS: %#x", r[0])
	}
	for f, allowed := range subs {
		r := alice.Sub(t, f)
		if ok := r[0] <= 2; ok != allowed {
			t.Errorf("subscribe %q: reason %#x, allowed=%v", f, r[0], allowed)
		}
	}
	// Publishing where only the server may publish is refused.
	for _, topic := range []string{"presence/alice", "user/bob/events", "presence/bob/heartbeat"} {
		if code, _ := alice.Pub(t, topic, 1, `{}`); code != 0x87 {
			t.Errorf("publish %s: reason %#x, want 0x87", topic, code)
		}
	}
	// CONNECT refusals.
	if code := connack(t, n.MQTTURL, "bob/d1", "alice", aliceTok); code != 0x85 {
		t.Errorf("client ID of another user: %#x, want 0x85", code)
	}
	if code := connack(t, n.MQTTURL, "alice/d2", "alice", bobTok); code != 0x86 {
		t.Errorf("token of another user: %#x, want 0x86", code)
	}
	if code := connack(t, n.MQTTURL, "alice/d2", "alice", "not-a-jwt"); code != 0x86 {
		t.Errorf("garbage token: %#x, want 0x86", code)
	}
	expired, err := auth.MintFromKeyDir(filepath.Join(n.Config.DataDir, "keys"), "edgechat", auth.Account{UserID: "alice"}, -5*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if code := connack(t, n.MQTTURL, "alice/d2", "alice", expired); code != 0x86 {
		t.Errorf("expired token: %#x, want 0x86", code)
	}
	if code := connack(t, n.MQTTURL, "alice/d2", "", ""); code == 0 {
		t.Error("anonymous client accepted outside dev mode")
	}
	// A foreign web page cannot open MQTT over WebSocket.
	req, _ := http.NewRequest("GET", n.HTTPURL+"/mqtt", nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Sec-WebSocket-Version", "13")
	req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	req.Header.Set("Sec-WebSocket-Protocol", "mqtt")
	req.Header.Set("Origin", "https://evil.example")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("foreign Origin: status %d, want 403", resp.StatusCode)
	}
}

func TestInvalidEnvelopesRefusedAndNothingStored(t *testing.T) {
	n := nodetest.StartNode(t)
	aliceTok, bobTok := n.NewUser(t, "alice"), n.NewUser(t, "bob")
	alice := mustConnectV5(t, n.MQTTURL, "alice", "d1", aliceTok)
	bad := []string{
		`not json`,
		`{"type":"text","body":"no cid"}`,
		`{"cid":"x","type":"sticker","body":"?"}`,
		`{"cid":"x","type":"text"}`,
		`{"cid":"x","type":"text","body":"hi","extra":1}`,
		`{"cid":"x","type":"text","body":"` + strings.Repeat("a", 20000) + `"}`,
	}
	for _, p := range bad {
		if code, _ := alice.Pub(t, "user/bob/newMessage", 1, p); code != 0x99 {
			t.Errorf("payload %.40q: reason %#x, want 0x99", p, code)
		}
	}
	if code, _ := alice.Pub(t, "user/nobody/newMessage", 1, textMsg("x", "hi")); code != 0x90 {
		t.Errorf("unknown recipient: %#x, want 0x90", code)
	}
	var page syncPage
	if st := api(t, n, bobTok, "GET", "/chat/sync", nil, &page); st != 200 || len(page.Messages) != 0 {
		t.Fatalf("sync after refusals: %d %+v", st, page)
	}
}

func TestRetriedCIDStoredAndDeliveredOnce(t *testing.T) {
	n := nodetest.StartNode(t)
	aliceTok, bobTok := n.NewUser(t, "alice"), n.NewUser(t, "bob")
	bob := mustConnectV5(t, n.MQTTURL, "bob", "d1", bobTok)
	bob.Sub(t, "user/bob/newMessage")
	alice := mustConnectV5(t, n.MQTTURL, "alice", "d1", aliceTok)
	for i := 0; i < 3; i++ {
		if code, _ := alice.Pub(t, "user/bob/newMessage", 1, textMsg("same-cid", "once")); code != 0 {
			t.Fatalf("attempt %d: PUBACK %#x", i, code)
		}
	}
	// The HTTP path dedupes the same way.
	var sent envelope
	if st := api(t, n, aliceTok, "POST", "/chat/messages", map[string]string{"to": "bob", "cid": "same-cid", "type": "text", "body": "once"}, &sent); st != 200 && st != 201 {
		t.Fatalf("POST /chat/messages retry: %d", st)
	}
	var page historyPage
	api(t, n, bobTok, "GET", "/chat/history?with=alice", nil, &page)
	if len(page.Messages) != 1 || page.Messages[0].ID != sent.ID {
		t.Fatalf("history after retries: %+v (http said %s)", page.Messages, sent.ID)
	}
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if len(bob.Received("")) < 1 {
			return errors.New("nothing delivered")
		}
		return nil
	})
	// Give a wrongly repeated delivery the chance to show up, through a
	// later message that must arrive after it on the same connection.
	alice.Pub(t, "user/bob/newMessage", 1, textMsg("marker", "marker"))
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if len(bob.Received("")) < 2 {
			return errors.New("marker not delivered")
		}
		return nil
	})
	if got := bob.Received(""); len(got) != 2 {
		t.Fatalf("bob got %d deliveries, want 2 (one per distinct cid)", len(got))
	}
}

func TestHistorySyncConversationsUnread(t *testing.T) {
	n := nodetest.StartNode(t)
	aliceTok, bobTok := n.NewUser(t, "alice"), n.NewUser(t, "bob")
	carolTok := n.NewUser(t, "carol")
	alice := mustConnectV5(t, n.MQTTURL, "alice", "d1", aliceTok)
	carol := mustConnectV5(t, n.MQTTURL, "carol", "d1", carolTok)
	for i := 0; i < 25; i++ {
		if code, _ := alice.Pub(t, "user/bob/newMessage", 1, textMsg(fmt.Sprintf("a%d", i), fmt.Sprintf("msg %d", i))); code != 0 {
			t.Fatalf("PUBACK %#x", code)
		}
	}
	carol.Pub(t, "user/bob/newMessage", 1, textMsg("c0", "hi from carol"))

	// History pages newest first, no gaps.
	var all []envelope
	before := ""
	for {
		var page historyPage
		path := "/chat/history?with=alice&limit=10"
		if before != "" {
			path += "&before=" + before
		}
		if st := api(t, n, bobTok, "GET", path, nil, &page); st != 200 {
			t.Fatalf("history: %d", st)
		}
		all = append(all, page.Messages...)
		if !page.HasMore {
			break
		}
		before = page.Messages[len(page.Messages)-1].ID
	}
	if len(all) != 25 || all[0].Body != "msg 24" || all[24].Body != "msg 0" {
		t.Fatalf("history: %d messages, first %q last %q", len(all), all[0].Body, all[len(all)-1].Body)
	}
	if st := api(t, n, bobTok, "GET", "/chat/history?with=alice&limit=500", nil, nil); st != 400 {
		t.Errorf("limit over 200: %d, want 400", st)
	}

	// Sync from the start, in pages, then nothing new.
	var synced []envelope
	cursor := ""
	for i := 0; i < 10; i++ {
		var page syncPage
		api(t, n, bobTok, "GET", "/chat/sync?limit=7&since="+cursor, nil, &page)
		synced = append(synced, page.Messages...)
		cursor = page.Cursor
		if !page.HasMore {
			break
		}
	}
	if len(synced) != 26 {
		t.Fatalf("sync returned %d, want 26", len(synced))
	}
	var rest syncPage
	api(t, n, bobTok, "GET", "/chat/sync?since="+cursor, nil, &rest)
	if len(rest.Messages) != 0 {
		t.Fatalf("sync after the end returned %d", len(rest.Messages))
	}
	if st := api(t, n, bobTok, "GET", "/chat/sync?since=garbage", nil, nil); st != 400 {
		t.Errorf("bad cursor: %d, want 400", st)
	}

	// Conversations: carol newest, unread counts.
	var convs conversations
	api(t, n, bobTok, "GET", "/chat/conversations", nil, &convs)
	if len(convs.Conversations) != 2 || convs.Conversations[0].Peer != "carol" || convs.Conversations[1].Unread != 25 || convs.Conversations[0].Unread != 1 {
		t.Fatalf("conversations: %+v", convs)
	}
	// Bob reads alice's messages up to the 20th over MQTT; alice gets the receipt.
	alice.Sub(t, "user/alice/receipts")
	bob := mustConnectV5(t, n.MQTTURL, "bob", "d1", bobTok)
	upTo := all[5].ID // msg 19
	if code, _ := bob.Pub(t, "user/alice/receipts", 1, fmt.Sprintf(`{"type":"read","upTo":%q}`, upTo)); code != 0 {
		t.Fatalf("receipt PUBACK %#x", code)
	}
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if len(alice.Received("user/alice/receipts")) == 0 {
			return errors.New("no receipt delivered")
		}
		return nil
	})
	api(t, n, bobTok, "GET", "/chat/conversations", nil, &convs)
	for _, c := range convs.Conversations {
		if c.Peer == "alice" && c.Unread != 5 {
			t.Fatalf("unread with alice after reading up to msg 19: %d, want 5", c.Unread)
		}
	}
	// A read cursor never moves back.
	bob.Pub(t, "user/alice/receipts", 1, fmt.Sprintf(`{"type":"read","upTo":%q}`, all[24].ID))
	api(t, n, bobTok, "GET", "/chat/conversations", nil, &convs)
	for _, c := range convs.Conversations {
		if c.Peer == "alice" && c.Unread != 5 {
			t.Fatalf("unread moved back to %d", c.Unread)
		}
	}
}

func TestSendOverHTTPDeliversLive(t *testing.T) {
	n := nodetest.StartNode(t)
	aliceTok, bobTok := n.NewUser(t, "alice"), n.NewUser(t, "bob")
	bob := mustConnectV5(t, n.MQTTURL, "bob", "d1", bobTok)
	bob.Sub(t, "user/bob/newMessage")
	var sent envelope
	if st := api(t, n, aliceTok, "POST", "/chat/messages", map[string]string{"to": "bob", "cid": "h1", "type": "text", "body": "over http"}, &sent); st != 201 {
		t.Fatalf("POST /chat/messages: %d", st)
	}
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		got := bob.Received("user/bob/newMessage")
		if len(got) != 1 {
			return errors.New("not delivered")
		}
		if e := decodeEnvelope(t, got[0].Payload); e.ID != sent.ID || e.From != "alice" {
			return fmt.Errorf("delivered %+v", e)
		}
		return nil
	})
	var e struct {
		Error struct{ Code string } `json:"error"`
	}
	if st := api(t, n, aliceTok, "POST", "/chat/messages", map[string]any{"to": "bob", "cid": "h2", "type": "text", "body": "x", "bogus": true}, &e); st != 400 || e.Error.Code == "" {
		t.Errorf("unknown field: %d %+v", st, e)
	}
	if st := api(t, n, "", "POST", "/chat/messages", map[string]string{"to": "bob", "cid": "h3", "type": "text", "body": "x"}, nil); st != 401 {
		t.Errorf("no token: %d, want 401", st)
	}
}

func TestPresenceTransitionsAndTakeoverWithoutFlap(t *testing.T) {
	interval := 150 * time.Millisecond
	n := nodetest.StartNode(t, nodetest.WithPresence(interval, 600*time.Millisecond))
	aliceTok, bobTok := n.NewUser(t, "alice"), n.NewUser(t, "bob")
	// A conversation makes alice's presence visible to bob.
	if st := api(t, n, aliceTok, "POST", "/chat/messages", map[string]string{"to": "bob", "cid": "p1", "type": "text", "body": "hey"}, nil); st != 201 {
		t.Fatalf("send: %d", st)
	}
	bob := mustConnectV5(t, n.MQTTURL, "bob", "d1", bobTok)
	if r := bob.Sub(t, "presence/alice"); r[0] > 2 {
		t.Fatalf("bob may not watch alice: %#x", r[0])
	}
	statuses := func() []string {
		var out []string
		for _, m := range bob.Received("presence/alice") {
			var p struct{ Status string }
			_ = jsonUnmarshal(m.Payload, &p)
			out = append(out, p.Status)
		}
		return out
	}
	waitLast := func(want string) {
		t.Helper()
		checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
			s := statuses()
			if len(s) == 0 || s[len(s)-1] != want {
				return fmt.Errorf("statuses %v, want last %q", s, want)
			}
			return nil
		})
	}
	alice := mustConnectV5(t, n.MQTTURL, "alice", "phone", aliceTok)
	waitLast("online")
	// No heartbeats: inactive after 3 intervals, offline after 5.
	waitLast("inactive")
	waitLast("offline")
	// A heartbeat brings her back.
	alice.Pub(t, "presence/alice/heartbeat", 1, "")
	waitLast("online")
	var p struct{ Status string }
	if st := api(t, n, bobTok, "GET", "/presence/alice", nil, &p); st != 200 || p.Status != "online" {
		t.Fatalf("GET /presence/alice: %d %+v", st, p)
	}
}

func TestPresenceTakeoverAndQuickReconnectDoNotFlap(t *testing.T) {
	// Long heartbeat interval so that only connection events can change
	// the status during the test; short grace so the window is short.
	grace := 300 * time.Millisecond
	n := nodetest.StartNode(t, nodetest.WithPresence(5*time.Second, grace))
	aliceTok, bobTok := n.NewUser(t, "alice"), n.NewUser(t, "bob")
	if st := api(t, n, aliceTok, "POST", "/chat/messages", map[string]string{"to": "bob", "cid": "p1", "type": "text", "body": "hey"}, nil); st != 201 {
		t.Fatalf("send: %d", st)
	}
	bob := mustConnectV5(t, n.MQTTURL, "bob", "d1", bobTok)
	bob.Sub(t, "presence/alice")
	// mochi writes the SUBACK before it queues the retained copy: were
	// alice online by then, bob would get her "online" twice, live and
	// retained. A second SUBSCRIBE is handled after the copy is queued.
	bob.Sub(t, "barrier/presence")
	statuses := func() []string {
		var out []string
		for _, m := range bob.Received("presence/alice") {
			var p struct{ Status string }
			_ = jsonUnmarshal(m.Payload, &p)
			out = append(out, p.Status)
		}
		return out
	}
	alice := mustConnectV5(t, n.MQTTURL, "alice", "phone", aliceTok)
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if s := statuses(); len(s) == 0 || s[len(s)-1] != "online" {
			return fmt.Errorf("statuses %v", s)
		}
		return nil
	})
	before := len(statuses())
	mustConnectV5(t, n.MQTTURL, "alice", "phone", aliceTok) // takes the session over
	_ = alice
	// A quick reconnect of a second device within the grace period.
	tablet := mustConnectV5(t, n.MQTTURL, "alice", "tablet", aliceTok)
	_ = tablet.Disconnect(&paho.Disconnect{})
	mustConnectV5(t, n.MQTTURL, "alice", "tablet", aliceTok)
	// Asserting that something does not happen needs a window: four grace
	// periods. The presence service publishes changes only: not even a
	// second "online".
	deadline := time.Now().Add(4 * grace)
	for time.Now().Before(deadline) {
		if s := statuses()[before:]; len(s) > 0 {
			t.Fatalf("takeover/reconnect published %v", s)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
