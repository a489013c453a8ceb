// Package mqtttest is the MQTT v5 test client edgechat's tests share: a
// paho.golang client that records every publish it receives, with
// helpers that fail the test instead of returning errors. It lives apart
// from testutil so that testutil stays free of MQTT.
package mqtttest

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgechat/edgechat/internal/pahoconn"
)

// DefaultTimeout bounds connecting and each operation of a Client unless
// Options.Timeout says otherwise.
const DefaultTimeout = 15 * time.Second

// Options of a connection. The zero value connects anonymously with a
// clean start, keep-alive 30 s and no session expiry.
type Options struct {
	ClientID string
	Username string // sent when not empty
	Password string // sent when not empty
	// KeepSession asks to resume a session (CleanStart = false).
	KeepSession   bool
	SessionExpiry uint32 // seconds
	// ReceiveMaximum, when not 0, is the client's Receive Maximum: the
	// server may have that many QoS 1 and 2 deliveries unacknowledged.
	ReceiveMaximum uint16
	// MaximumPacketSize, when not 0, is the largest packet the client
	// accepts: the server must not send it a larger one.
	MaximumPacketSize uint32
	// TopicAliasMaximum, when not 0, lets the server send topics by alias.
	TopicAliasMaximum uint16
	Will              *paho.WillMessage
	// NoProblemInfo sets Request Problem Information to 0.
	NoProblemInfo bool
	// Timeout bounds the connect and each later operation; default DefaultTimeout.
	Timeout time.Duration
	// OnPublish, when set, gets every received message instead of the
	// record (Next, TryNext and Received then see nothing): for
	// benchmarks and for tests that merge several clients' streams.
	OnPublish func(*paho.Publish)
}

// Client is a connected paho v5 client that records what it receives.
// The embedded *paho.Client is there for anything the helpers do not cover.
type Client struct {
	*paho.Client
	Conn    net.Conn // the connection it runs on (close it to drop without DISCONNECT)
	timeout time.Duration

	mu         sync.Mutex
	msgs       []*paho.Publish
	read       int           // messages Next and TryNext have returned
	arrived    chan struct{} // signalled (never blocking) on each arrival
	disconnect *paho.Disconnect
	clientErr  error // the first error paho ended the connection on (OnClientError)
}

// Dial connects over TCP to addr ("host:port", a "tcp://" prefix allowed).
// It returns the CONNACK whenever one came, and an error when the
// connection failed or was refused. An accepted client is disconnected
// when the test ends.
func Dial(t testing.TB, addr string, o Options) (*Client, *paho.Connack, error) {
	t.Helper()
	c, ca, err := Open(addr, o)
	if err == nil {
		t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
	}
	return c, ca, err
}

// MustDial is Dial that fails the test unless the server accepts.
func MustDial(t testing.TB, addr string, o Options) *Client {
	t.Helper()
	c, _, err := Dial(t, addr, o)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Connect speaks MQTT v5 over conn (TLS, WebSocket, ...) like Dial.
func Connect(t testing.TB, conn net.Conn, o Options) (*Client, *paho.Connack, error) {
	t.Helper()
	c, ca, err := connect(conn, o)
	if err == nil {
		t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
	}
	return c, ca, err
}

// Open is Dial outside a test's lifetime (a load generator's goroutine):
// the caller disconnects the client.
func Open(addr string, o Options) (*Client, *paho.Connack, error) {
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	conn, err := net.DialTimeout("tcp", strings.TrimPrefix(addr, "tcp://"), o.Timeout)
	if err != nil {
		return nil, nil, fmt.Errorf("mqtttest: dial %s: %w", addr, err)
	}
	return connect(conn, o)
}

// connect speaks MQTT v5 over conn; on failure or refusal it closes conn.
func connect(conn net.Conn, o Options) (*Client, *paho.Connack, error) {
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	c := &Client{Conn: conn, timeout: o.Timeout, arrived: make(chan struct{}, 1)}
	c.Client = paho.NewClient(paho.ClientConfig{
		Conn: pahoconn.Wrap(conn), // TLS, WebSocket: see pahoconn
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			if o.OnPublish != nil {
				o.OnPublish(pr.Packet)
				return true, nil
			}
			c.mu.Lock()
			c.msgs = append(c.msgs, pr.Packet)
			c.mu.Unlock()
			select {
			case c.arrived <- struct{}{}:
			default:
			}
			return true, nil
		}},
		OnServerDisconnect: func(d *paho.Disconnect) {
			c.mu.Lock()
			c.disconnect = d
			c.mu.Unlock()
		},
		OnClientError: func(err error) {
			c.mu.Lock()
			if c.clientErr == nil {
				c.clientErr = err
			}
			c.mu.Unlock()
		},
	})
	cp := &paho.Connect{
		ClientID:    o.ClientID,
		KeepAlive:   30,
		CleanStart:  !o.KeepSession,
		WillMessage: o.Will,
		Properties:  &paho.ConnectProperties{SessionExpiryInterval: &o.SessionExpiry, RequestProblemInfo: !o.NoProblemInfo},
	}
	if o.ReceiveMaximum > 0 {
		cp.Properties.ReceiveMaximum = &o.ReceiveMaximum
	}
	if o.MaximumPacketSize > 0 {
		cp.Properties.MaximumPacketSize = &o.MaximumPacketSize
	}
	if o.TopicAliasMaximum > 0 {
		cp.Properties.TopicAliasMaximum = &o.TopicAliasMaximum
	}
	if o.Username != "" {
		cp.Username, cp.UsernameFlag = o.Username, true
	}
	if o.Password != "" {
		cp.Password, cp.PasswordFlag = []byte(o.Password), true
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.Timeout)
	defer cancel()
	ca, err := c.Client.Connect(ctx, cp)
	if err == nil && ca != nil && ca.ReasonCode >= 0x80 {
		err = fmt.Errorf("mqtttest: refused with reason %#x", ca.ReasonCode)
	}
	if err != nil {
		_ = conn.Close()
		return c, ca, fmt.Errorf("mqtttest: connect %q: %w", o.ClientID, err)
	}
	return c, ca, nil
}

// Sub subscribes to filters at QoS 1 and returns the SUBACK reason codes.
func (c *Client) Sub(t testing.TB, filters ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	s := &paho.Subscribe{}
	for _, f := range filters {
		s.Subscriptions = append(s.Subscriptions, paho.SubscribeOptions{Topic: f, QoS: 1})
	}
	sa, err := c.Subscribe(ctx, s)
	if sa == nil {
		t.Fatalf("mqtttest: subscribe %v: %v", filters, err)
	}
	return sa.Reasons
}

// MustSub subscribes and fails the test unless every filter is granted.
func (c *Client) MustSub(t testing.TB, filters ...string) {
	t.Helper()
	for i, code := range c.Sub(t, filters...) {
		if code >= 0x80 {
			t.Fatalf("mqtttest: subscribe %s: reason %#02x", filters[i], code)
		}
	}
}

// Pub publishes and returns the PUBACK's reason code (0 for QoS 0) and
// the server's whole answer (reason string and properties).
func (c *Client) Pub(t testing.TB, topic string, qos byte, payload string) (byte, *paho.PublishResponse) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	pr, err := c.Publish(ctx, &paho.Publish{Topic: topic, QoS: qos, Payload: []byte(payload)})
	if pr == nil {
		t.Fatalf("mqtttest: publish to %s: %v", topic, err)
	}
	return pr.ReasonCode, pr
}

// Next returns the oldest message Next and TryNext have not returned yet,
// waiting for it up to the client's timeout; it fails the test when none
// comes.
func (c *Client) Next(t testing.TB) *paho.Publish {
	t.Helper()
	deadline := time.NewTimer(c.timeout)
	defer deadline.Stop()
	for {
		if m, ok := c.TryNext(); ok {
			return m
		}
		select {
		case <-c.arrived:
		case <-deadline.C:
			t.Fatalf("mqtttest: no message within %v", c.timeout)
			return nil
		}
	}
}

// TryNext returns the oldest unreturned message if there is one.
func (c *Client) TryNext() (*paho.Publish, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.read == len(c.msgs) {
		return nil, false
	}
	m := c.msgs[c.read]
	c.read++
	return m, true
}

// Received returns every message received so far on topic ("" for all),
// whether or not Next returned it.
func (c *Client) Received(topic string) []*paho.Publish {
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

// ConnectionError is the error paho ended the connection on (a read or
// write that failed: the server closed it), nil while it is up or after
// a DISCONNECT from the server. paho ends the connection on a failed
// write before it reads what the server sent last: a client that writes
// as the server closes may never see the server's DISCONNECT.
func (c *Client) ConnectionError() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.clientErr
}

// ServerDisconnect is the reason code of the DISCONNECT the server sent,
// and whether it sent one.
func (c *Client) ServerDisconnect() (reason byte, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.disconnect == nil {
		return 0, false
	}
	return c.disconnect.ReasonCode, true
}

// ServerDisconnectReason is the reason string of the DISCONNECT the
// server sent ("" when none came, or it had none).
func (c *Client) ServerDisconnectReason() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.disconnect == nil || c.disconnect.Properties == nil {
		return ""
	}
	return c.disconnect.Properties.ReasonString
}
