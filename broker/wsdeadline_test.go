package broker

import (
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// A write deadline set on a WebSocket connection bounds its writes, as on
// a TCP connection: mochi sets one at every packet read (1.5 × keepalive)
// and before a final DISCONNECT (2 s), so that a client that stopped
// reading holds up neither its writer nor a takeover of its session.
// gorilla/websocket sets the socket's write deadline to its own before
// every write (none unless set through it): before, writes to a client
// that reads nothing blocked for good, whatever deadline mochi set.
func TestWebSocketWriteDeadlineBoundsWrites(t *testing.T) {
	for _, name := range []string{"SetDeadline", "SetWriteDeadline"} {
		t.Run(name, func(t *testing.T) {
			c := wsPeerThatNeverReads(t)
			set := c.SetDeadline
			if name == "SetWriteDeadline" {
				set = c.SetWriteDeadline
			}
			if err := set(time.Now().Add(100 * time.Millisecond)); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() {
				chunk := make([]byte, 64<<10)
				for {
					if _, err := c.Write(chunk); err != nil {
						done <- err
						return
					}
				}
			}()
			select {
			case err := <-done:
				if ne := net.Error(nil); !errors.As(err, &ne) || !ne.Timeout() {
					t.Fatalf("write failed with %v, want the deadline", err)
				}
			case <-time.After(waitFor):
				t.Fatal("writes to a peer that reads nothing still block after the connection's write deadline")
			}
		})
	}
}

// wsPeerThatNeverReads is the server side of a WebSocket whose client
// reads nothing.
func wsPeerThatNeverReads(t *testing.T) *wsConn {
	t.Helper()
	conns := make(chan *websocket.Conn, 1)
	up := websocket.Upgrader{Subprotocols: []string{"mqtt"}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ws, err := up.Upgrade(w, r, nil); err == nil {
			conns <- ws
		}
	}))
	t.Cleanup(srv.Close)
	peer, _, err := dialWS(t, "ws"+strings.TrimPrefix(srv.URL, "http"), nil, "mqtt")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = peer.Close() })
	c := newWSConn(<-conns)
	t.Cleanup(func() { _ = c.Close() })
	return c
}
