package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgechat/edgechat/internal/pahoconn"
)

// dialOptions describe one bench MQTT connection.
type dialOptions struct {
	Addr      string // host:port
	User      string
	Device    string
	Token     string
	KeepAlive uint16 // seconds
	// ReceiveMaximum bounds the messages the server may have in flight to
	// us; paho also sizes a channel by it (64 Ki pointers, 512 KB, if left
	// unset), which matters with thousands of connections.
	ReceiveMaximum uint16
	OnPublish      func(*paho.Publish) // nil: incoming messages are ignored
	// ClientID overrides the default client ID {User}/{Device}.
	ClientID string
	Timeout  time.Duration
}

// mqttAddr turns "tcp://h:p", "mqtt://h:p" or "h:p" into "h:p".
func mqttAddr(s string) (string, error) {
	if isWS(s) {
		return s, nil
	}
	for _, p := range []string{"tcp://", "mqtt://"} {
		s = strings.TrimPrefix(s, p)
	}
	if _, _, err := net.SplitHostPort(s); err != nil {
		return "", fmt.Errorf("MQTT address %q: want host:port: %w", s, err)
	}
	return s, nil
}

// dial opens a TCP or WebSocket connection and an MQTT v5 session on it with a plain
// paho.Client (no autopaho: no reconnection machinery per connection).
func dial(ctx context.Context, o dialOptions) (*paho.Client, error) {
	if o.Timeout <= 0 {
		o.Timeout = 15 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	conn, err := dialConn(ctx, o.Addr)
	if err != nil {
		return nil, err
	}
	cfg := paho.ClientConfig{Conn: pahoconn.Wrap(conn)} // WebSocket: see pahoconn
	if o.OnPublish != nil {
		on := o.OnPublish
		cfg.OnPublishReceived = []func(paho.PublishReceived) (bool, error){
			func(pr paho.PublishReceived) (bool, error) { on(pr.Packet); return true, nil },
		}
	} else {
		cfg.OnPublishReceived = []func(paho.PublishReceived) (bool, error){
			func(paho.PublishReceived) (bool, error) { return true, nil },
		}
	}
	c := paho.NewClient(cfg)
	rm := o.ReceiveMaximum
	if rm == 0 {
		rm = 16
	}
	ka := o.KeepAlive
	if ka == 0 {
		ka = 60
	}
	cid := o.ClientID
	if cid == "" {
		cid = o.User + "/" + o.Device
		if o.Token == "" {
			// Anonymous: edgechat --dev refuses the {user}/{device} form
			// without a token (0x85), other brokers accept anything.
			cid = o.User + "-" + o.Device
		}
	}
	ack, err := c.Connect(ctx, &paho.Connect{
		ClientID:     cid,
		Username:     o.User,
		UsernameFlag: true,
		Password:     []byte(o.Token),
		PasswordFlag: o.Token != "",
		KeepAlive:    ka,
		CleanStart:   true,
		Properties:   &paho.ConnectProperties{ReceiveMaximum: &rm},
	})
	if err != nil {
		conn.Close()
		if ack != nil {
			return nil, fmt.Errorf("connecting %s/%s: refused with reason 0x%02x %s: %w", o.User, o.Device, ack.ReasonCode, ackReason(ack), err)
		}
		return nil, fmt.Errorf("connecting %s/%s: %w", o.User, o.Device, err)
	}
	return c, nil
}

func ackReason(a *paho.Connack) string {
	if a.Properties != nil {
		return a.Properties.ReasonString
	}
	return ""
}

// subscribe subscribes c to topic at QoS 1 and checks the grant.
func subscribe(ctx context.Context, c *paho.Client, topic string) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	sa, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: topic, QoS: 1}}})
	if err != nil {
		return fmt.Errorf("subscribing to %s: %w", topic, err)
	}
	if len(sa.Reasons) != 1 || sa.Reasons[0] >= 0x80 {
		return fmt.Errorf("subscribing to %s: %w: reasons %v", topic, errRefused, sa.Reasons)
	}
	return nil
}

var errRefused = errors.New("refused by the server")
