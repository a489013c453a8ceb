package edgechat

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/packets"
	"golang.org/x/net/proxy"

	"github.com/edgechat/edgechat/internal/wsnet"
)

// writeErrorHold bounds how long a failed write waits for the reading
// side of its connection to end (see readFirstConn).
var writeErrorHold = 500 * time.Millisecond // a variable for the tests

// dialBroker opens the network connection for a CONNECT to u (autopaho's
// AttemptConnection): TCP, TLS or WebSocket as autopaho would, over a
// readFirstConn, and with the lock paho takes around each packet.
func dialBroker(ctx context.Context, cfg autopaho.ClientConfig, u *url.URL) (net.Conn, error) {
	// autopaho passes its own context here, not the attempt's.
	ctx, cancel := context.WithTimeout(ctx, cfg.ConnectTimeout)
	defer cancel()
	var c net.Conn
	var err error
	switch u.Scheme {
	case "ws", "wss":
		var tc *tls.Config
		if u.Scheme == "wss" {
			tc = cfg.TlsCfg
		}
		// As autopaho's WebSocket dialer: the HTTP proxy of the
		// environment, not all_proxy.
		d := wsnet.Dialer{TLSConfig: tc, Proxy: http.ProxyFromEnvironment,
			NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				var nd net.Dialer
				c, err := nd.DialContext(ctx, network, addr)
				if err != nil {
					return nil, err
				}
				return newReadFirstConn(c), nil
			}}
		c, err = d.Dial(ctx, u.String())
	case "tls", "mqtts", "ssl":
		if c, err = dialRaw(ctx, "tcp", u.Host); err != nil {
			break
		}
		tc := cfg.TlsCfg.Clone()
		if tc == nil {
			tc = &tls.Config{}
		}
		if tc.ServerName == "" {
			tc.ServerName = u.Hostname()
		}
		tlsConn := tls.Client(c, tc)
		if err = tlsConn.HandshakeContext(ctx); err != nil {
			_ = c.Close()
			break
		}
		c = tlsConn
	default: // tcp, mqtt (brokerURLs admits nothing else)
		c, err = dialRaw(ctx, "tcp", u.Host)
	}
	if err != nil {
		return nil, err
	}
	// paho writes a packet in several Writes on anything but a bare
	// *net.TCPConn, and from several goroutines: it holds this lock
	// around each packet.
	return packets.NewThreadSafeConn(c), nil
}

// dialRaw makes the TCP connection of tcp:// and tls:// URLs, through
// the proxy of all_proxy when set (as autopaho's own dialer does).
func dialRaw(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := proxy.Dial(ctx, network, addr)
	if err != nil {
		return nil, fmt.Errorf("edgechat: dial %s: %w", addr, err)
	}
	return newReadFirstConn(c), nil
}

// readFirstConn is a connection whose failed Write waits, up to
// writeErrorHold, until its Read has failed too (or it is closed) before
// it returns. paho ends the connection on the first error of either
// side; when the server sent a DISCONNECT and closed (a takeover: 0x8E),
// a write of this client at that moment (a heartbeat, a PUBACK) fails on
// the closed socket, and without the wait paho would close the
// connection before its reader took the DISCONNECT, still readable in
// the socket's buffer: the client would not know it was taken over, and
// would take the client ID back at once (see onServerDisconnect).
type readFirstConn struct {
	net.Conn // not *net.TCPConn embedded: its writev would pass by Write
	endOnce  sync.Once
	ended    chan struct{} // closed when a Read failed or Close was called
}

func newReadFirstConn(c net.Conn) *readFirstConn {
	return &readFirstConn{Conn: c, ended: make(chan struct{})}
}

func (c *readFirstConn) end() { c.endOnce.Do(func() { close(c.ended) }) }

func (c *readFirstConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil {
		c.end()
	}
	return n, err
}

func (c *readFirstConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	var ne net.Error
	if err != nil && !(errors.As(err, &ne) && ne.Timeout()) {
		t := time.NewTimer(writeErrorHold)
		select {
		case <-c.ended:
		case <-t.C:
		}
		t.Stop()
	}
	return n, err
}

func (c *readFirstConn) Close() error {
	c.end()
	return c.Conn.Close()
}
