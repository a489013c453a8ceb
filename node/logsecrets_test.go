package node_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/testutil/mqtttest"
	"github.com/edgechat/edgechat/node/nodetest"
)

// syncBuffer is a log destination read while the node writes to it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// The node's log never holds a client's access token or a message's
// body, at any level: a client that sends a packet the broker refuses
// as a protocol error (a second CONNECT, a PUBLISH to a topic with a
// wildcard) had that whole packet logged at WARN by mochi ("error
// processing packet ... pk={Connect:{... Password:[101 121 74 ...]}}"),
// its access token or the message's body as decimal bytes, and refused
// publishes logged their body at debug. Now the packet is logged as a
// summary (type, packet ID, topic, QoS, payload size).
func TestTheLogHoldsNoTokenNorMessageBody(t *testing.T) {
	logs := &syncBuffer{}
	cfg := nodetest.TestConfig(t)
	n, err := nodetest.Start(cfg, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Stop() })
	tok := n.NewUser(t, "alice")
	const body = "the-secret-body-of-a-message"

	// session connects, sends packets, then reads until the server closes
	// the connection (answers == 0) or for that many answers.
	session := func(answers int, packets ...[]byte) {
		t.Helper()
		conn, err := net.Dial("tcp", n.Node.MQTTAddr())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		r := bufio.NewReader(conn)
		if _, err := conn.Write(mqtttest.RawConnectV5("alice/phone", "alice", tok)); err != nil {
			t.Fatal(err)
		}
		if typ, b, err := mqtttest.ReadRawPacket(r); err != nil || typ != 0x20 || len(b) < 2 || b[1] != 0 {
			t.Fatalf("CONNACK: %#x % x %v", typ, b, err)
		}
		for _, p := range packets {
			if _, err := conn.Write(p); err != nil {
				t.Fatal(err)
			}
		}
		if answers == 0 {
			_, _ = io.Copy(io.Discard, r) // until the server closes
			return
		}
		for range answers {
			if typ, b, err := mqtttest.ReadRawPacket(r); err != nil || typ != 0x40 || len(b) < 3 || b[2] < 0x80 {
				t.Fatalf("want a PUBACK refusing the publish, got %#x % x %v", typ, b, err)
			}
		}
	}
	// A second CONNECT, carrying the token: a protocol violation.
	session(0, mqtttest.RawConnectV5("alice/phone", "alice", tok))
	// A PUBLISH to a topic with a wildcard: a protocol violation too.
	session(0, mqtttest.RawPublishV5("user/alice/+", 1, `{"cid":"c1","type":"text","body":"`+body+`"}`))
	// A chat message refused by the broker's hook (to a user that does not
	// exist), and one that is not JSON.
	session(2, mqtttest.RawPublishV5("user/nobody/newMessage", 2, `{"cid":"c2","type":"text","body":"`+body+`"}`),
		mqtttest.RawPublishV5("user/alice/newMessage", 3, body))

	nodetest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if s := logs.String(); !strings.Contains(s, "second connect") || !strings.Contains(s, "user/alice/+") {
			return errors.New("the refusals are not logged yet")
		}
		return nil
	})
	out := logs.String()
	for _, secret := range []string{tok, body} {
		for _, form := range []string{secret[:16], decimalBytes(secret[:12]), fmt.Sprintf("%x", secret[:12])} {
			if i := strings.Index(out, form); i >= 0 {
				start := max(0, strings.LastIndexByte(out[:i], '\n')+1)
				end := min(len(out), start+400)
				t.Errorf("the log holds %q (of %.20s...): %s...", form, secret, out[start:end])
			}
		}
	}
}

// decimalBytes is how fmt prints a []byte inside a struct: "[101 121 74".
func decimalBytes(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%d", s[i])
	}
	return b.String()
}
