// Package wsnet dials MQTT over WebSocket (subprotocol "mqtt", binary
// frames) as a net.Conn for paho: region links to a wss:// URL
// (bridge/region) and the bench's ws:// clients. gorilla/websocket is the
// broker's own /mqtt listener's library too.
package wsnet

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"

	"github.com/gorilla/websocket"
)

// Dial opens a WebSocket to rawURL (ws:// or wss://) with the "mqtt"
// subprotocol and no Origin header (edgechat's gateway accepts a
// non-browser client without one); cfg is the TLS client configuration
// of wss:// (nil: the system's roots).
func Dial(ctx context.Context, rawURL string, cfg *tls.Config) (net.Conn, error) {
	return Dialer{TLSConfig: cfg}.Dial(ctx, rawURL)
}

// Dialer is Dial with more said about the connection under the
// WebSocket.
type Dialer struct {
	// TLSConfig of wss:// (nil: the system's roots).
	TLSConfig *tls.Config
	// NetDialContext makes the TCP connection (nil: a net.Dialer's); the
	// WebSocket runs over what it returns, TLS included for wss://.
	NetDialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	// Proxy, if set, names the HTTP proxy for a request (as
	// http.ProxyFromEnvironment does).
	Proxy func(*http.Request) (*url.URL, error)
}

// Dial opens a WebSocket to rawURL as the package's Dial does.
func (wd Dialer) Dial(ctx context.Context, rawURL string) (net.Conn, error) {
	d := websocket.Dialer{Subprotocols: []string{"mqtt"}, TLSClientConfig: wd.TLSConfig, ReadBufferSize: 4096, WriteBufferSize: 4096,
		NetDialContext: wd.NetDialContext, Proxy: wd.Proxy}
	ws, resp, err := d.DialContext(ctx, rawURL, http.Header{})
	if resp != nil && resp.Body != nil {
		_ = resp.Body.Close()
	}
	if err != nil {
		if resp != nil {
			return nil, errors.Join(err, errors.New("http status "+resp.Status))
		}
		return nil, err
	}
	if ws.Subprotocol() != "mqtt" {
		_ = ws.Close()
		return nil, errors.New(`websocket: the server did not accept the "mqtt" subprotocol`)
	}
	return &conn{Conn: ws.NetConn(), ws: ws}, nil
}

// conn is a WebSocket as a net.Conn carrying MQTT in binary frames;
// reads stream across frame boundaries.
type conn struct {
	net.Conn // addresses and deadlines
	ws       *websocket.Conn
	r        io.Reader  // the current frame; nil between frames
	wmu      sync.Mutex // gorilla allows one writer at a time
}

var errTextFrame = errors.New("wsnet: websocket text frame (MQTT needs binary frames)")

func (c *conn) Read(p []byte) (int, error) {
	for {
		if c.r == nil {
			typ, r, err := c.ws.NextReader()
			if err != nil {
				return 0, err
			}
			if typ != websocket.BinaryMessage {
				return 0, errTextFrame
			}
			c.r = r
		}
		n, err := c.r.Read(p)
		if errors.Is(err, io.EOF) {
			c.r = nil
			if n == 0 {
				continue
			}
			err = nil
		}
		return n, err
	}
}

func (c *conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.ws.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (c *conn) Close() error { return c.ws.Close() }
