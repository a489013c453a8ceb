package broker

import (
	"bufio"
	"errors"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/ratelimit"
	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/internal/testutil/mqtttest"
)

// A client's CONNECT writes at most one line at Info or above, a short
// one, whatever it sends: mochi warned of every CONNECT with a keepalive
// under 5 s (0, which MQTT allows: none) as it read it, before any check,
// so a client over the connection rate, whose refusals are logged at
// Debug lest a flood flood the log, still wrote a WARN line each time,
// with the client ID it chose (up to the packet size, 64 KiB): anyone
// could write a node's log as fast as they could connect. And the one
// refusal logged at Info held the whole client ID.
func TestConnectFloodsDoNotFloodTheLog(t *testing.T) {
	var buf testutil.SyncBuffer
	e := startBroker(t, func(c *Config) {
		c.Logger = slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
		c.ConnectRate = ratelimit.Spec{Rate: 0.001, Burst: 1} // the clock is frozen: one attempt, then refusals
		c.AcceptRate = ratelimit.Unlimited                    // every attempt reaches its CONNECT
	})
	clientID := "alice/" + strings.Repeat("x", 8<<10) // a device ID far over 64 bytes
	const attempts = 20
	for i := range attempts {
		conn, err := net.Dial("tcp", e.addr)
		if err != nil {
			t.Fatal(err)
		}
		_ = conn.SetDeadline(time.Now().Add(waitFor))
		vh := []byte{0, 4, 'M', 'Q', 'T', 'T', 5, 0xc2, 0, 0, 0} // keepalive 0, no properties
		vh = mqtttest.RawString(mqtttest.RawString(mqtttest.RawString(vh, clientID), "alice"), "tok:alice")
		if _, err := conn.Write(mqtttest.RawPacket(0x10, vh)); err != nil {
			t.Fatal(err)
		}
		want := byte(0x9f) // connection rate exceeded
		if i == 0 {
			want = 0x85 // client identifier not valid
		}
		if typ, body := readRawPacket(t, bufio.NewReader(conn)); typ != 0x20 || len(body) < 2 || body[1] != want {
			t.Fatalf("attempt %d: got %#x % x, want CONNACK %#x", i, typ, body[:min(len(body), 4)], want)
		}
		_ = conn.Close()
	}
	// The first attempt's refusal is logged (after its CONNACK).
	testutil.CheckFor(t, waitFor, time.Millisecond, func() error {
		if !strings.Contains(buf.String(), "connect refused") {
			return errors.New("no refusal logged yet")
		}
		return nil
	})
	var lines []string // of the connections (the node's start logs its own)
	for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		if strings.Contains(l, " client=") {
			lines = append(lines, l)
		}
	}
	if len(lines) != 1 {
		t.Errorf("%d CONNECTs wrote %d lines at Info or above, want 1 (the refusal within the rate):", attempts, len(lines))
	}
	for _, l := range lines {
		if len(l) > 1<<10 {
			t.Errorf("a line of %d bytes: %.300s...", len(l), l)
		} else if len(lines) != 1 {
			t.Errorf("  %s", l)
		}
	}
}
