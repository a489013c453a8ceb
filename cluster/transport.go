package cluster

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/edgechat/edgechat/internal/backoff"
)

// The cluster port carries two protocols. The dialer writes one byte
// first that says which (as consul's RPC mux does); the listener reads it
// and hands the connection on. Any other first byte closes the connection.
const (
	muxRaft byte = 'R' // hashicorp/raft's NetworkTransport stream
	muxRPC  byte = 'C' // edgechat node-to-node RPC (internal/peerrpc: net/rpc's wire format, gob)

	// muxHandshakeTimeout bounds the wait for the first byte, so that a
	// silent connection cannot hold a goroutine forever.
	muxHandshakeTimeout = 5 * time.Second
)

// ErrMuxClosed is returned by the raft stream layer once the mux is closed.
var ErrMuxClosed = errors.New("cluster: listener closed")

// mux owns the cluster listener. It binds first and works out the
// advertised address afterwards, so that ":0" (any interface, any port)
// can advertise 127.0.0.1 with the port the kernel picked.
type mux struct {
	ln        net.Listener
	advertise *net.TCPAddr
	log       *slog.Logger

	raftConns chan net.Conn
	serveRPC  func(net.Conn) // set before start

	mu    sync.Mutex
	conns map[net.Conn]struct{} // open accepted connections, closed by Close
	// handed are the Raft connections whose handler runs (see quiesce).
	handed map[*trackedConn]struct{}
	closed chan struct{}
	once   sync.Once
	wg     sync.WaitGroup
}

func newMux(bind, advertise string, log *slog.Logger) (*mux, error) {
	ln, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, fmt.Errorf("cluster: bind %s: %w", bind, err)
	}
	bound := ln.Addr().(*net.TCPAddr)
	var adv *net.TCPAddr
	switch {
	case advertise != "":
		adv, err = net.ResolveTCPAddr("tcp", advertise)
		if err != nil {
			_ = ln.Close()
			return nil, fmt.Errorf("cluster: advertise address %q: %w", advertise, err)
		}
		if adv.Port == 0 {
			adv.Port = bound.Port
		}
	case bound.IP == nil || bound.IP.IsUnspecified():
		adv = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: bound.Port}
	default:
		adv = bound
	}
	if adv.IP == nil || adv.IP.IsUnspecified() {
		_ = ln.Close()
		return nil, fmt.Errorf("cluster: advertise address %s is not reachable by peers", adv)
	}
	return &mux{
		ln:        ln,
		advertise: adv,
		log:       log,
		raftConns: make(chan net.Conn),
		conns:     make(map[net.Conn]struct{}),
		handed:    make(map[*trackedConn]struct{}),
		closed:    make(chan struct{}),
	}, nil
}

// start runs the accept loop; serveRPC must be set.
func (m *mux) start() {
	m.wg.Add(1)
	go m.acceptLoop()
}

func (m *mux) acceptLoop() {
	defer m.wg.Done()
	bo := backoff.New(5*time.Millisecond, time.Second)
	for {
		c, err := m.ln.Accept()
		if err != nil {
			select {
			case <-m.closed:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// EMFILE and friends: back off rather than spin.
			m.log.Warn("cluster accept failed; retrying", "err", err)
			if !bo.Wait(m.closed) {
				return
			}
			continue
		}
		bo.Reset()
		if !m.track(c) {
			_ = c.Close()
			return
		}
		m.wg.Add(1)
		go m.handshake(c)
	}
}

// handshake reads the protocol byte and hands the connection on. Close
// waits for handshakes but not for RPC connections being served: their
// handlers may take a while, and Close closes the connections anyway.
func (m *mux) handshake(c net.Conn) {
	done := sync.OnceFunc(m.wg.Done)
	defer done()
	_ = c.SetReadDeadline(time.Now().Add(muxHandshakeTimeout))
	var b [1]byte
	if _, err := c.Read(b[:]); err != nil {
		m.untrack(c)
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	switch b[0] {
	case muxRaft:
		tc := &trackedConn{Conn: c, m: m}
		m.mu.Lock()
		m.handed[tc] = struct{}{} // before Raft may close it
		m.mu.Unlock()
		select {
		case m.raftConns <- tc: // Raft closes it
		case <-m.closed:
			m.mu.Lock()
			delete(m.handed, tc)
			m.mu.Unlock()
			m.untrack(c)
		}
	case muxRPC:
		done()
		m.serveRPC(c)
		m.untrack(c)
	default:
		m.log.Debug("cluster connection with an unknown protocol byte closed", "byte", b[0], "remote", c.RemoteAddr())
		m.untrack(c)
	}
}

// trackedConn leaves the mux's set when its owner closes it. It also
// tells when Raft's handler of the connection is between commands:
// hashicorp/raft serves a connection's commands on the transport's
// goroutine (heartbeats write the current term there), outside what its
// Shutdown waits for, so the log store may close only once no handler is
// in the middle of a command (see quiesce).
type trackedConn struct {
	net.Conn
	m       *mux
	reading atomic.Int32 // Read calls in progress: the handler waits for a command
}

func (t *trackedConn) Read(p []byte) (int, error) {
	t.reading.Add(1)
	defer t.reading.Add(-1)
	return t.Conn.Read(p)
}

// Close is the handler's last act (hashicorp/raft closes the connection
// when its handler returns).
func (t *trackedConn) Close() error {
	t.m.mu.Lock()
	delete(t.m.conns, t.Conn)
	delete(t.m.handed, t)
	t.m.mu.Unlock()
	return t.Conn.Close()
}

// quiesce waits, at most for limit, until the handler of every Raft
// connection handed out is waiting for input or done, so that none is
// half way through a command when the stores close. Call it after Close.
func (m *mux) quiesce(limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for {
		busy := false
		m.mu.Lock()
		for t := range m.handed {
			if t.reading.Load() == 0 {
				busy = true
				break
			}
		}
		m.mu.Unlock()
		if !busy {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(time.Millisecond)
	}
}

func (m *mux) track(c net.Conn) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	select {
	case <-m.closed:
		return false
	default:
	}
	m.conns[c] = struct{}{}
	return true
}

// untrack forgets and closes c.
func (m *mux) untrack(c net.Conn) {
	m.mu.Lock()
	delete(m.conns, c)
	m.mu.Unlock()
	_ = c.Close()
}

// Close stops accepting, closes every accepted connection and waits for
// the accept loop and the handshakes. Safe to call more than once.
func (m *mux) Close() error {
	var err error
	m.once.Do(func() {
		m.mu.Lock()
		close(m.closed)
		for c := range m.conns {
			_ = c.Close()
		}
		m.mu.Unlock()
		err = m.ln.Close()
		m.wg.Wait()
	})
	return err
}

// raftLayer is the raft.StreamLayer view of the mux.
type raftLayer struct {
	m      *mux
	once   sync.Once
	closed chan struct{}
}

var _ raft.StreamLayer = (*raftLayer)(nil)

func newRaftLayer(m *mux) *raftLayer { return &raftLayer{m: m, closed: make(chan struct{})} }

func (l *raftLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	return dialMux(string(address), muxRaft, timeout)
}

func (l *raftLayer) Accept() (net.Conn, error) {
	select {
	case c := <-l.m.raftConns:
		return c, nil
	case <-l.closed:
		return nil, ErrMuxClosed
	case <-l.m.closed:
		return nil, ErrMuxClosed
	}
}

// Close stops Raft's side only; the mux is closed by the node.
func (l *raftLayer) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *raftLayer) Addr() net.Addr { return l.m.advertise }

// dialMux connects to a peer's cluster port and selects the protocol.
func dialMux(addr string, proto byte, timeout time.Duration) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return nil, err
	}
	_ = c.SetWriteDeadline(time.Now().Add(timeout))
	if _, err := c.Write([]byte{proto}); err != nil {
		_ = c.Close()
		return nil, err
	}
	_ = c.SetWriteDeadline(time.Time{})
	return c, nil
}
