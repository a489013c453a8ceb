package broker

import (
	"context"
	"github.com/edgechat/edgechat/internal/testutil/mqtttest"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	pahopk "github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	"github.com/gorilla/websocket"
)

func dialWS(t *testing.T, url string, header http.Header, subprotocols ...string) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	d := websocket.Dialer{Subprotocols: subprotocols, HandshakeTimeout: waitFor}
	return d.Dial(url, header)
}

func TestWebSocket(t *testing.T) {
	e := startBroker(t, nil)
	srv := httptest.NewServer(e.b.WebSocketHandler())
	t.Cleanup(srv.Close)
	url := "ws" + strings.TrimPrefix(srv.URL, "http")

	ws, resp, err := dialWS(t, url, http.Header{"Origin": {srv.URL}}, "mqtt")
	if err != nil {
		t.Fatalf("dial (same-origin): %v", err)
	}
	if resp.Header.Get("Sec-WebSocket-Protocol") != "mqtt" {
		t.Fatalf("subprotocol %q", resp.Header.Get("Sec-WebSocket-Protocol"))
	}
	bob, _, err := mqtttest.Connect(t, pahopk.NewThreadSafeConn(newWSConn(ws)), mqtttest.Options{ClientID: "bob/browser", Username: "bob", Password: "tok:bob"})
	if err != nil {
		t.Fatalf("connect over ws: %v", err)
	}
	bob.MustSub(t, "user/bob/newMessage")
	alice := mustV5(t, e.addr, "alice", "phone")
	// Subscribed first: her own copy of what she sends comes there too
	// (after the PUBACK), and must not be taken for bob's answer.
	alice.MustSub(t, "user/alice/newMessage")
	alice.Pub(t, "user/bob/newMessage", 1, `{"cid":"ws1","type":"text","body":"over ws"}`)
	if got := envOf(t, bob.Next(t).Payload); got.CID != "ws1" || got.From != "alice" {
		t.Fatalf("bob got %+v", got)
	}
	if got := envOf(t, alice.Next(t).Payload); got.CID != "ws1" || got.To != "bob" {
		t.Fatalf("alice's own copy: %+v", got)
	}
	// and the other way
	if code, _ := bob.Pub(t, "user/alice/newMessage", 1, `{"cid":"ws2","type":"text","body":"from browser"}`); code != 0 {
		t.Fatalf("PUBACK 0x%02x", code)
	}
	if got := envOf(t, alice.Next(t).Payload); got.CID != "ws2" || got.From != "bob" {
		t.Fatalf("alice got %+v", got)
	}

	// Without Origin (a non-browser) is fine; a foreign Origin is 403.
	if ws, _, err := dialWS(t, url, nil, "mqtt"); err != nil {
		t.Fatalf("dial without origin: %v", err)
	} else {
		ws.Close()
	}
	_, resp, err = dialWS(t, url, http.Header{"Origin": {"https://evil.example"}}, "mqtt")
	if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("foreign origin: err %v resp %v", err, resp)
	}
	_, resp, err = dialWS(t, url, nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("no subprotocol: err %v resp %v", err, resp)
	}
}

func TestWebSocketAllowedOrigins(t *testing.T) {
	e := startBroker(t, func(c *Config) { c.AllowedOrigins = []string{"https://chat.example.com"} })
	srv := httptest.NewServer(e.b.WebSocketHandler())
	t.Cleanup(srv.Close)
	url := "ws" + strings.TrimPrefix(srv.URL, "http")
	ws, _, err := dialWS(t, url, http.Header{"Origin": {"https://CHAT.example.com"}}, "mqtt")
	if err != nil {
		t.Fatalf("allowed origin: %v", err)
	}
	ws.Close()
	// The request's own host (a page this node served) stays allowed:
	// the list adds to it.
	ws, _, err = dialWS(t, url, http.Header{"Origin": {srv.URL}}, "mqtt")
	if err != nil {
		t.Fatalf("same host with an allow-list: %v", err)
	}
	ws.Close()
	for _, o := range []string{"https://chat.example.com:8443", "http://chat.example.com"} {
		if _, resp, err := dialWS(t, url, http.Header{"Origin": {o}}, "mqtt"); err == nil || resp.StatusCode != http.StatusForbidden {
			t.Fatalf("origin %s: err %v", o, err)
		}
	}
	if _, err := New(Config{Dev: true, AllowedOrigins: []string{"chat.example.com"}}, Deps{}); err == nil {
		t.Fatal("origin without scheme accepted")
	}
}

func TestDevMode(t *testing.T) {
	e := startBroker(t, func(c *Config) { c.Dev = true })

	sub, _, err := mqtttest.Dial(t, e.addr, mqtttest.Options{ClientID: "anon-sub"})
	if err != nil {
		t.Fatalf("anonymous connect: %v", err)
	}
	sub.MustSub(t, "sensors/#")
	sub.MustSub(t, "$share/g/jobs/x")
	if code := sub.Sub(t, "user/x/newMessage")[0]; code != 0x87 {
		t.Fatalf("anonymous subscribe to a chat topic: 0x%02x", code)
	}
	if code := sub.Sub(t, "$share/g/user/bob/newMessage")[0]; code != 0x87 {
		t.Fatalf("shared chat subscription: 0x%02x", code)
	}

	// A publisher with a will on a non-chat topic; retained message.
	conn, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	pub, _, err := mqtttest.Connect(t, conn, mqtttest.Options{ClientID: "anon-pub", Will: &paho.WillMessage{Topic: "sensors/will", Payload: []byte("gone")}})
	if err != nil {
		t.Fatalf("connect with will: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if _, err := pub.Publish(ctx, &paho.Publish{Topic: "sensors/t1", QoS: 1, Retain: true, Payload: []byte("21.5")}); err != nil {
		t.Fatal(err)
	}
	if m := sub.Next(t); m.Topic != "sensors/t1" || string(m.Payload) != "21.5" {
		t.Fatalf("got %s %q", m.Topic, m.Payload)
	}
	late, _, err := mqtttest.Dial(t, e.addr, mqtttest.Options{ClientID: "anon-late"})
	if err != nil {
		t.Fatal(err)
	}
	late.MustSub(t, "sensors/t1")
	if m := late.Next(t); string(m.Payload) != "21.5" || !m.Retain {
		t.Fatalf("retained: %q retain=%v", m.Payload, m.Retain)
	}
	pub.Pub(t, "jobs/x", 1, "job")
	if m := sub.Next(t); m.Topic != "jobs/x" {
		t.Fatalf("shared subscription got %s", m.Topic)
	}
	if code, _ := pub.Pub(t, "user/bob/newMessage", 1, `{"cid":"a","type":"text","body":"x"}`); code != 0x87 {
		t.Fatalf("anonymous direct message: 0x%02x", code)
	}
	conn.Close() // abrupt: the will fires
	if m := sub.Next(t); m.Topic != "sensors/will" || string(m.Payload) != "gone" {
		t.Fatalf("will: %s %q", m.Topic, m.Payload)
	}

	// The {user}/{device} form needs credentials; credentials are checked.
	if _, ca, _ := mqtttest.Dial(t, e.addr, mqtttest.Options{ClientID: "alice/phone"}); ca == nil || ca.ReasonCode != 0x85 {
		t.Fatalf("anonymous alice/phone: %+v", ca)
	}
	if _, ca, _ := mqtttest.Dial(t, e.addr, mqtttest.Options{ClientID: "alice/phone", Username: "alice", Password: "forged"}); ca == nil || ca.ReasonCode != 0x86 {
		t.Fatalf("forged token in dev mode: %+v", ca)
	}
	alice := mustV5(t, e.addr, "alice", "phone")
	alice.MustSub(t, "user/alice/newMessage")
	if code := alice.Sub(t, "user/bob/newMessage")[0]; code != 0x87 {
		t.Fatalf("dev mode: alice subscribed to bob's inbox: 0x%02x", code)
	}
}

// A page served by another node of the cluster (Deps.PeerOrigin) may
// connect here, whatever the allow-list says.
func TestWebSocketPeerOrigins(t *testing.T) {
	const peer = "http://127.0.0.1:4000"
	e := startBrokerWith(t, func(c *Config) { c.AllowedOrigins = []string{"https://chat.example.com"} },
		func(d *Deps) { d.PeerOrigin = func(o string) bool { return o == peer } })
	srv := httptest.NewServer(e.b.WebSocketHandler())
	t.Cleanup(srv.Close)
	url := "ws" + strings.TrimPrefix(srv.URL, "http")
	for _, o := range []string{peer, "https://chat.example.com"} {
		ws, _, err := dialWS(t, url, http.Header{"Origin": {o}}, "mqtt")
		if err != nil {
			t.Fatalf("origin %s: %v", o, err)
		}
		ws.Close()
	}
	if _, resp, err := dialWS(t, url, http.Header{"Origin": {"http://127.0.0.1:4001"}}, "mqtt"); err == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("another origin: err %v", err)
	}
}

// A WebSocket refused for its Origin says why, and which setting allows
// it: the refusal answered "Forbidden" only (and the access log a bare
// 403), so an operator whose web app lives on another origin could not
// tell it from a refused token.
func TestWebSocketForeignOriginSaysWhy(t *testing.T) {
	e := startBroker(t, nil)
	srv := httptest.NewServer(e.b.WebSocketHandler())
	t.Cleanup(srv.Close)
	url := "ws" + strings.TrimPrefix(srv.URL, "http")
	_, resp, err := dialWS(t, url, http.Header{"Origin": {"https://evil.example"}}, "mqtt")
	if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("foreign origin: err %v resp %v", err, resp)
	}
	b, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(b), "https://evil.example") || !strings.Contains(string(b), "--allowed-origins") {
		t.Errorf("403 body %q: want the origin and --allowed-origins named", b)
	}
}
