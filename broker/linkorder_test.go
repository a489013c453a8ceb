package broker

import (
	"context"
	"crypto/x509"
	"errors"
	"sync"
	"testing"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgechat/edgechat/internal/testutil/mqtttest"
	"github.com/edgechat/edgechat/internal/wire"
)

// orderLinks is a Links of one peer, eu (secret "s"), that records what
// it committed and fails a payload "fail" (not committed) and refuses
// "bad" (a malformed message, skipped by the link).
type orderLinks struct {
	mu        sync.Mutex
	committed []string
}

func (l *orderLinks) Authenticate(clientID, username string, password []byte, number string, certs []*x509.Certificate) (string, error) {
	if username != "$link/eu" || string(password) != "s" {
		return "", errors.New("not eu")
	}
	return "eu", nil
}

func (l *orderLinks) Receive(ctx context.Context, region, topic string, payload []byte) error {
	switch string(payload) {
	case "fail":
		return wire.ErrUnavailable
	case "bad":
		return wire.ErrInvalid
	}
	l.mu.Lock()
	l.committed = append(l.committed, string(payload))
	l.mu.Unlock()
	return nil
}

func (l *orderLinks) Linked(region string) bool { return region == "eu" }

func (l *orderLinks) Answer(ctx context.Context, region, topic string, payload []byte) ([]byte, error) {
	return []byte("{}"), nil
}

// A link has several publishes in flight and they must commit in order:
// once one failed to commit, the broker refuses the later publishes of
// that connection (they would otherwise commit ahead of it, which the
// link sends again); a publish refused for good (malformed) does not stop
// the connection; a new connection is served again.
func TestLinkPublishesAfterAFailureRefused(t *testing.T) {
	links := &orderLinks{}
	e := startBrokerWith(t, nil, func(d *Deps) { d.Links = links })
	defer e.close()
	dial := func() *mqtttest.Client {
		return mqtttest.MustDial(t, e.addr, mqtttest.Options{ClientID: "$link/eu", Username: "$link/eu", Password: "s"})
	}
	pub := func(c *mqtttest.Client, payload string) byte {
		t.Helper()
		code, _ := c.Pub(t, "$link/eu/batch", 1, payload)
		return code
	}
	c := dial()
	for _, p := range []string{"a", "bad", "b"} {
		if code := pub(c, p); (code >= 0x80) != (p == "bad") {
			t.Fatalf("%s: PUBACK %#x", p, code)
		}
	}
	if code := pub(c, "fail"); code < 0x80 {
		t.Fatalf("fail: PUBACK %#x", code)
	}
	if code := pub(c, "c"); code != 0x80 {
		t.Fatalf("c after a failure on the same connection: PUBACK %#x; want 0x80", code)
	}
	_ = c.Disconnect(&paho.Disconnect{})
	c2 := dial()
	if code := pub(c2, "c"); code != 0 {
		t.Fatalf("c on a new connection: PUBACK %#x", code)
	}
	links.mu.Lock()
	defer links.mu.Unlock()
	if got := links.committed; len(got) != 3 || got[0] != "a" || got[1] != "b" || got[2] != "c" {
		t.Fatalf("committed %q; want a b c", got)
	}
}
