package broker

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	pahopk "github.com/eclipse/paho.golang/packets"

	"github.com/edgechat/edgechat/internal/testutil/mqtttest"
)

// The per-connection read and write buffers are growth points, not
// limits: a publish of nearly MaxPacketSize, far larger than either
// buffer, goes through the read loop and out through the subscriber's
// writer (which mochi starts only while something is queued, see
// third_party/mochi-mqtt-server/PATCHES.md), over TCP and WebSocket, and
// a second one after the writer has gone idle in between.
func TestLargePublishesPassSmallBuffers(t *testing.T) {
	e := startBroker(t, func(c *Config) {
		c.Dev = true
		c.ReadBufferSize = 512
		c.WriteBufferSize = 512
		c.MaxPacketSize = DefaultMaxPacketSize
	})
	srv := httptest.NewServer(e.b.WebSocketHandler())
	t.Cleanup(srv.Close)

	ws, _, err := dialWS(t, "ws"+strings.TrimPrefix(srv.URL, "http"), http.Header{"Origin": {srv.URL}}, "mqtt")
	if err != nil {
		t.Fatalf("dial ws: %v", err)
	}
	wsSub, _, err := mqtttest.Connect(t, pahopk.NewThreadSafeConn(newWSConn(ws)), mqtttest.Options{ClientID: "big-ws-sub"})
	if err != nil {
		t.Fatalf("connect over ws: %v", err)
	}
	tcpSub := mqtttest.MustDial(t, e.addr, mqtttest.Options{ClientID: "big-tcp-sub"})
	pub := mqtttest.MustDial(t, e.addr, mqtttest.Options{ClientID: "big-pub"})
	for _, c := range []*mqtttest.Client{wsSub, tcpSub} {
		c.MustSub(t, "big/#")
	}

	// The largest payload whose PUBLISH (fixed header 4 bytes, topic 2+5,
	// packet ID 2, properties length 1) fits MaxPacketSize.
	maxPayload := e.cfg.MaxPacketSize - 4 - 7 - 2 - 1
	for i, size := range []int{maxPayload, 3 * e.cfg.ReadBufferSize, maxPayload} {
		payload := bytes.Repeat([]byte{byte('a' + i)}, size)
		if code, _ := pub.Pub(t, "big/x", 1, string(payload)); code != 0 {
			t.Fatalf("publish %d of %d bytes: reason 0x%02x", i, size, code)
		}
		for name, c := range map[string]*mqtttest.Client{"tcp": tcpSub, "ws": wsSub} {
			got := c.Next(t)
			if got.Topic != "big/x" || !bytes.Equal(got.Payload, payload) {
				t.Fatalf("%s subscriber, publish %d: got %d bytes on %q, want %d bytes", name, i, len(got.Payload), got.Topic, size)
			}
		}
	}
}
