package node_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgechat/edgechat/internal/ratelimit"
	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/node/nodetest"
)

var checkFor = testutil.CheckFor

// v5Client is a plain paho v5 client that records what it receives.
type v5Client struct {
	*paho.Client
	mu   sync.Mutex
	msgs []*paho.Publish
}

func (c *v5Client) received(topic string) []*paho.Publish {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*paho.Publish
	for _, m := range c.msgs {
		if topic == "" || m.Topic == topic {
			out = append(out, m)
		}
	}
	return out
}

// connectV5 connects a paho v5 client; it returns the CONNACK reason code
// and a client (nil when refused).
func connectV5ForBench(b *testing.B, addr, clientID, user, token string) (*paho.Client, byte) {
	conn, err := net.Dial("tcp", strings.TrimPrefix(addr, "tcp://"))
	if err != nil {
		b.Fatal(err)
	}
	c := paho.NewClient(paho.ClientConfig{Conn: conn})
	ca, err := c.Connect(context.Background(), &paho.Connect{ClientID: clientID, Username: user, UsernameFlag: true,
		Password: []byte(token), PasswordFlag: true, KeepAlive: 30, CleanStart: true})
	if err != nil || ca.ReasonCode != 0 {
		return nil, 0xff
	}
	b.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
	return c, 0
}

func connectV5(t *testing.T, addr, clientID, user, token string) (*v5Client, byte) {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(addr, "tcp://"))
	if err != nil {
		t.Fatal(err)
	}
	c := &v5Client{}
	c.Client = paho.NewClient(paho.ClientConfig{
		Conn: conn,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			c.mu.Lock()
			c.msgs = append(c.msgs, pr.Packet)
			c.mu.Unlock()
			return true, nil
		}},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cp := &paho.Connect{ClientID: clientID, KeepAlive: 30, CleanStart: true}
	if user != "" {
		cp.Username, cp.UsernameFlag = user, true
	}
	if token != "" {
		cp.Password, cp.PasswordFlag = []byte(token), true
	}
	ca, err := c.Connect(ctx, cp)
	if err != nil || ca.ReasonCode != 0 {
		code := byte(0xff)
		if ca != nil {
			code = ca.ReasonCode
		}
		_ = conn.Close()
		return nil, code
	}
	t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
	return c, 0
}

func mustConnectV5(t *testing.T, addr, user, device, token string) *v5Client {
	t.Helper()
	c, code := connectV5(t, addr, user+"/"+device, user, token)
	if c == nil {
		t.Fatalf("connect %s/%s refused with %#x", user, device, code)
	}
	return c
}

func subscribe(t *testing.T, c *v5Client, filters ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s := &paho.Subscribe{}
	for _, f := range filters {
		s.Subscriptions = append(s.Subscriptions, paho.SubscribeOptions{Topic: f, QoS: 1})
	}
	sa, err := c.Subscribe(ctx, s)
	if err != nil && sa == nil {
		t.Fatalf("subscribe %v: %v", filters, err)
	}
	return sa.Reasons
}

// publish sends QoS 1 and returns the PUBACK reason code.
func publish(t *testing.T, c *v5Client, topic string, payload string) byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	pr, err := c.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte(payload)})
	if pr != nil {
		return pr.ReasonCode
	}
	t.Fatalf("publish to %s: %v", topic, err)
	return 0
}

type envelope struct {
	ID      string `json:"id"`
	From    string `json:"from"`
	To      string `json:"to"`
	CID     string `json:"cid"`
	Type    string `json:"type"`
	Body    string `json:"body"`
	ReplyTo string `json:"replyTo"`
}

func decodeEnvelope(t *testing.T, b []byte) envelope {
	t.Helper()
	var e envelope
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatalf("delivered payload %q is not an envelope: %v", b, err)
	}
	return e
}

// api calls the HTTP API and decodes the JSON answer into out (if not nil).
func api(t testing.TB, n *nodetest.Node, token, method, path string, body any, out any) int {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, n.HTTPURL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := ratelimit.DoHTTP(nil, req, 0) // tests with limits on wait out 429s
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	rb, _ := io.ReadAll(resp.Body)
	if out != nil && len(rb) > 0 {
		if err := json.Unmarshal(rb, out); err != nil {
			t.Fatalf("%s %s: %d %s: %v", method, path, resp.StatusCode, rb, err)
		}
	}
	return resp.StatusCode
}

func textMsg(cid, body string) string {
	return fmt.Sprintf(`{"cid":%q,"type":"text","body":%q}`, cid, body)
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }
