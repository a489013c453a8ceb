package broker

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/mochi-mqtt/server/v2/listeners"

	"github.com/edgechat/edgechat/internal/backoff"
)

// tracker remembers open connections of a listener so that Close can end
// those still in their CONNECT phase (mochi only disconnects clients it
// has registered, and would otherwise wait for them in Close).
type tracker struct {
	mu     sync.Mutex
	closed bool
	conns  map[net.Conn]struct{}
}

func (t *tracker) add(c net.Conn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	if t.conns == nil {
		t.conns = make(map[net.Conn]struct{})
	}
	t.conns[c] = struct{}{}
	return true
}

func (t *tracker) remove(c net.Conn) {
	t.mu.Lock()
	delete(t.conns, c)
	t.mu.Unlock()
}

func (t *tracker) closeAll() {
	t.mu.Lock()
	t.closed = true
	conns := t.conns
	t.conns = nil
	t.mu.Unlock()
	for c := range conns {
		_ = c.Close()
	}
}

// tcpListener is a mochi listener over a socket bound in New (so that
// the address is known before Run), with an optional TLS layer and a
// deadline for the CONNECT packet (mochi sets none before CONNECT).
type tcpListener struct {
	id             string
	ln             net.Listener
	tls            *tls.Config
	connectTimeout time.Duration
	log            *slog.Logger
	end            atomic.Bool
	tr             tracker
	disconnect     func(listenerID string)
	// admit, when set, decides at accept whether a connection goes on
	// (the per-IP accept bucket); one it refuses is closed at once.
	admit func(net.Conn) bool
}

var _ listeners.Listener = (*tcpListener)(nil)

func newTCPListener(id string, ln net.Listener, cfg *tls.Config, connectTimeout time.Duration, disconnect func(string)) *tcpListener {
	return &tcpListener{id: id, ln: ln, tls: cfg, connectTimeout: connectTimeout, log: slog.Default(), disconnect: disconnect}
}

func (l *tcpListener) Init(log *slog.Logger) error {
	l.log = log
	return nil
}

func (l *tcpListener) ID() string      { return l.id }
func (l *tcpListener) Address() string { return l.ln.Addr().String() }
func (l *tcpListener) Protocol() string {
	if l.tls != nil {
		return "tls"
	}
	return "tcp"
}

func (l *tcpListener) Serve(establish listeners.EstablishFn) {
	bo := backoff.New(5*time.Millisecond, time.Second)
	for {
		c, err := l.ln.Accept()
		if err != nil {
			if l.end.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			// Transient (e.g. out of file descriptors): back off like
			// net/http instead of giving up the listener.
			d := bo.Next()
			l.log.Warn("accept", "error", err, "retry_in", d)
			time.Sleep(d)
			continue
		}
		bo.Reset()
		if l.admit != nil && !l.admit(c) {
			_ = c.Close() // before any TLS or MQTT work: a flood stays cheap
			continue
		}
		go l.handle(c, establish)
	}
}

func (l *tcpListener) handle(c net.Conn, establish listeners.EstablishFn) {
	if l.tls != nil {
		c = tls.Server(c, l.tls)
	}
	if !l.tr.add(c) {
		_ = c.Close()
		return
	}
	defer l.tr.remove(c)
	_ = c.SetDeadline(time.Now().Add(l.connectTimeout)) // mochi replaces it after CONNECT
	if !l.handshake(c) {
		_ = c.Close()
		return
	}
	if err := establish(l.id, c); err != nil {
		l.ended(c, err)
	}
}

// handshake completes the TLS handshake of c (none without TLS) before
// mochi reads the CONNECT, so that a client certificate the listener
// refuses (one that the link CA, Config.TLS.ClientCAs, does not verify)
// is logged as such. Not inlined, like ended.
//
//go:noinline
func (l *tcpListener) handshake(c net.Conn) bool {
	tc, ok := c.(*tls.Conn)
	if !ok {
		return true
	}
	err := tc.Handshake()
	if err == nil {
		return true
	}
	if cv := (*tls.CertificateVerificationError)(nil); errors.As(err, &cv) {
		subject := ""
		if len(cv.UnverifiedCertificates) > 0 {
			subject = cv.UnverifiedCertificates[0].Subject.String()
		}
		l.log.Warn("tls client certificate refused", "remote", c.RemoteAddr().String(), "subject", subject, "error", err)
	} else {
		l.log.Debug("tls handshake failed", "remote", c.RemoteAddr().String(), "error", err)
	}
	return false
}

// ended logs why a connection ended. It is not inlined into handle, whose
// frame stays on the connection's goroutine stack while the client idles:
// the logging call's arguments would make that frame larger, and an idle
// goroutine's stack can only shrink (at GC) to 4 KiB when it uses under a
// quarter of that.
//
//go:noinline
func (l *tcpListener) ended(c net.Conn, err error) {
	if !isQuietClose(err) {
		l.log.Debug("connection ended", "remote", c.RemoteAddr().String(), "error", err)
	}
}

// Close stops accepting and ends every connection of this listener. It
// does not call mochi's closeClients: that one (Clients.GetByListener)
// takes the clients read lock recursively and deadlocks when a client
// disconnects at the same moment.
func (l *tcpListener) Close(listeners.CloseFn) {
	if !l.end.CompareAndSwap(false, true) {
		return
	}
	_ = l.ln.Close()
	l.disconnect(l.id)
	l.tr.closeAll()
}

func isQuietClose(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed)
}

// wsListener serves MQTT over WebSocket through the gateway's HTTP
// server: it is a mochi listener whose Serve only stores the establish
// function, and an http.Handler that upgrades requests and hands the
// connections to mochi.
type wsListener struct {
	id        string
	b         *Broker
	upgrader  websocket.Upgrader
	mu        sync.RWMutex
	establish listeners.EstablishFn
	inflight  sync.WaitGroup // handlers that may still call establish
	log       *slog.Logger
	tr        tracker
}

var (
	_ listeners.Listener = (*wsListener)(nil)
	_ http.Handler       = (*wsListener)(nil)
)

func newWSListener(id string, b *Broker) *wsListener {
	l := &wsListener{id: id, b: b, log: b.log}
	l.upgrader = websocket.Upgrader{
		HandshakeTimeout: b.cfg.ConnectTimeout,
		ReadBufferSize:   b.cfg.ReadBufferSize,
		WriteBufferSize:  b.cfg.WriteBufferSize,
		// Shared write buffers: idle connections hold none.
		WriteBufferPool: &sync.Pool{},
		Subprotocols:    []string{"mqtt"},
		CheckOrigin:     l.checkOrigin,
	}
	return l
}

func (l *wsListener) Init(log *slog.Logger) error {
	l.log = log
	return nil
}

func (l *wsListener) ID() string       { return l.id }
func (l *wsListener) Address() string  { return "/mqtt" }
func (l *wsListener) Protocol() string { return "ws" }

func (l *wsListener) Serve(establish listeners.EstablishFn) {
	l.mu.Lock()
	l.establish = establish
	l.mu.Unlock()
}

func (l *wsListener) serving() bool {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.establish != nil
}

// Close ends every WebSocket connection (see tcpListener.Close).
func (l *wsListener) Close(listeners.CloseFn) { l.shutdown() }

// shutdown refuses new WebSocket connections, ends the open ones and waits
// until no handler can call mochi any more. The broker calls it before
// mochi's own Close, which must not run while a connection is still being
// established (a data race inside mochi otherwise).
func (l *wsListener) shutdown() {
	l.mu.Lock()
	l.establish = nil
	l.mu.Unlock()
	l.b.disconnectListener(l.id)
	l.tr.closeAll()
	l.inflight.Wait()
}

func (l *wsListener) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	l.mu.RLock()
	establish := l.establish
	if establish != nil {
		l.inflight.Add(1) // under the lock: shutdown's Wait cannot miss it
	}
	l.mu.RUnlock()
	if establish != nil {
		defer l.inflight.Done()
	}
	if establish == nil { // before Run or after shutdown
		w.Header().Set("Retry-After", "1")
		http.Error(w, "mqtt broker not running", http.StatusServiceUnavailable)
		return
	}
	if !websocket.IsWebSocketUpgrade(r) {
		http.Error(w, "MQTT over WebSocket: upgrade required", http.StatusUpgradeRequired)
		return
	}
	if !slices.Contains(websocket.Subprotocols(r), "mqtt") {
		http.Error(w, `MQTT over WebSocket needs the "mqtt" subprotocol`, http.StatusBadRequest)
		return
	}
	if !l.checkOrigin(r) {
		// Checked here too, before the upgrader (which would answer a
		// bare "Forbidden"), so that the answer and the log say why.
		l.b.m.refused.WithLabelValues("ws_upgrade").Inc()
		origin := r.Header.Get("Origin")
		l.log.Info("websocket refused: origin not allowed", "origin", origin, "host", r.Host, "remote", r.RemoteAddr)
		http.Error(w, fmt.Sprintf("MQTT over WebSocket: origin %q is not allowed (this host's own origin, the cluster's nodes and --allowed-origins are)", origin), http.StatusForbidden)
		return
	}
	ws, err := l.upgrader.Upgrade(w, r, nil)
	if err != nil {
		l.b.m.refused.WithLabelValues("ws_upgrade").Inc()
		return
	}
	c := newWSConn(ws)
	// The client's address as the gateway saw it (it rewrites RemoteAddr
	// behind a trusted proxy): connection rate limits key on it.
	c.remote = remoteAddr(r.RemoteAddr)
	if !l.tr.add(c) {
		_ = c.Close()
		return
	}
	defer l.tr.remove(c)
	_ = c.SetDeadline(time.Now().Add(l.b.cfg.ConnectTimeout))
	if err := establish(l.id, c); err != nil && !isQuietClose(err) {
		l.log.Debug("websocket connection ended", "remote", r.RemoteAddr, "error", err)
	}
}

// checkOrigin allows requests without Origin (non-browsers), the
// request's own host (a page this node served: its web app), the
// cluster's own nodes' origins and the origins in the allow-list, which
// adds to the same host rather than replacing it.
func (l *wsListener) checkOrigin(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	o, err := normalizeOrigin(origin)
	if err != nil {
		return false
	}
	if u, err := url.Parse(o); err == nil && strings.EqualFold(u.Host, r.Host) {
		return true
	}
	if l.b.deps.PeerOrigin != nil && l.b.deps.PeerOrigin(o) {
		return true
	}
	for _, a := range l.b.cfg.AllowedOrigins {
		if n, err := normalizeOrigin(a); err == nil && n == o {
			return true
		}
	}
	return false
}

// normalizeOrigin reduces an origin to lowercase scheme://host[:port].
func normalizeOrigin(s string) (string, error) {
	u, err := url.Parse(strings.TrimSpace(s))
	if err != nil {
		return "", err
	}
	if u.Scheme == "" || u.Host == "" {
		return "", errors.New("want scheme://host[:port]")
	}
	return strings.ToLower(u.Scheme + "://" + u.Host), nil
}

// wsConn is a WebSocket as a net.Conn carrying MQTT in binary frames.
// Reads stream across frame boundaries (an MQTT packet may span frames
// and a frame may hold several packets). mochi serializes writes.
type wsConn struct {
	net.Conn // the underlying connection: addresses and deadlines
	ws       *websocket.Conn
	r        io.Reader // current frame, nil between frames
	remote   net.Addr  // overrides Conn.RemoteAddr when set
	// wdl is the write deadline (Unix nanoseconds, 0: none). gorilla sets
	// the socket's write deadline to its own before every write, so the
	// one mochi sets (1.5 × keepalive at each packet read, 2 s before a
	// final DISCONNECT) is handed to it in Write; set on the socket too,
	// it cuts short a write in progress.
	wdl atomic.Int64
}

func (c *wsConn) SetDeadline(t time.Time) error {
	c.storeWriteDeadline(t)
	return c.Conn.SetDeadline(t)
}

func (c *wsConn) SetWriteDeadline(t time.Time) error {
	c.storeWriteDeadline(t)
	return c.Conn.SetWriteDeadline(t)
}

func (c *wsConn) storeWriteDeadline(t time.Time) {
	var n int64
	if !t.IsZero() {
		n = t.UnixNano()
	}
	c.wdl.Store(n)
}

// RemoteAddr is the HTTP request's RemoteAddr when known.
func (c *wsConn) RemoteAddr() net.Addr {
	if c.remote != nil && c.remote.String() != "" {
		return c.remote
	}
	return c.Conn.RemoteAddr()
}

func newWSConn(ws *websocket.Conn) *wsConn {
	return &wsConn{Conn: ws.NetConn(), ws: ws}
}

// errTextFrame refuses text frames: MQTT over WebSocket is binary.
var errTextFrame = errors.New("broker: websocket text frame (MQTT needs binary frames)")

func (c *wsConn) Read(p []byte) (int, error) {
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
				continue // empty or finished frame: read the next one
			}
			err = nil
		}
		return n, err
	}
}

func (c *wsConn) Write(p []byte) (int, error) {
	var dl time.Time
	if n := c.wdl.Load(); n != 0 {
		dl = time.Unix(0, n)
	}
	_ = c.ws.SetWriteDeadline(dl) // writes are serialized (mochi), as gorilla needs
	if err := c.ws.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (c *wsConn) Close() error { return c.ws.Close() }
