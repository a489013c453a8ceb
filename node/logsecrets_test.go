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
		if _, err := conn.Write(rawConnect("alice/phone", "alice", tok)); err != nil {
			t.Fatal(err)
		}
		if typ, b := readPacket(t, r); typ != 0x20 || len(b) < 2 || b[1] != 0 {
			t.Fatalf("CONNACK: %#x % x", typ, b)
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
			if typ, b := readPacket(t, r); typ != 0x40 || len(b) < 3 || b[2] < 0x80 {
				t.Fatalf("want a PUBACK refusing the publish, got %#x % x", typ, b)
			}
		}
	}
	// A second CONNECT, carrying the token: a protocol violation.
	session(0, rawConnect("alice/phone", "alice", tok))
	// A PUBLISH to a topic with a wildcard: a protocol violation too.
	session(0, rawPublish("user/alice/+", 1, `{"cid":"c1","type":"text","body":"`+body+`"}`))
	// A chat message refused by the broker's hook (to a user that does not
	// exist), and one that is not JSON.
	session(2, rawPublish("user/nobody/newMessage", 2, `{"cid":"c2","type":"text","body":"`+body+`"}`),
		rawPublish("user/alice/newMessage", 3, body))

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

func rawConnect(clientID, user, pass string) []byte {
	vh := []byte{0, 4, 'M', 'Q', 'T', 'T', 5, 0xc2, 0, 60, 0}
	vh = rawString(rawString(rawString(vh, clientID), user), pass)
	return append(append([]byte{0x10}, rawLen(len(vh))...), vh...)
}

// rawPublish is an MQTT 5 QoS 1 PUBLISH without properties.
func rawPublish(topic string, id uint16, payload string) []byte {
	vh := rawString(nil, topic)
	vh = append(vh, byte(id>>8), byte(id), 0)
	vh = append(vh, payload...)
	return append(append([]byte{0x32}, rawLen(len(vh))...), vh...)
}

func rawString(b []byte, s string) []byte {
	return append(append(b, byte(len(s)>>8), byte(len(s))), s...)
}

func rawLen(n int) []byte {
	var b []byte
	for {
		d := byte(n % 128)
		if n /= 128; n > 0 {
			d |= 0x80
		}
		if b = append(b, d); n == 0 {
			return b
		}
	}
}

func readPacket(t *testing.T, r *bufio.Reader) (byte, []byte) {
	t.Helper()
	typ, err := r.ReadByte()
	if err != nil {
		t.Fatalf("reading a packet: %v", err)
	}
	n, mul := 0, 1
	for {
		d, err := r.ReadByte()
		if err != nil {
			t.Fatalf("reading a packet's length: %v", err)
		}
		n += int(d&0x7f) * mul
		mul *= 128
		if d&0x80 == 0 {
			break
		}
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		t.Fatalf("reading a packet's body: %v", err)
	}
	return typ, b
}
