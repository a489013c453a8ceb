// SPDX-License-Identifier: MIT

//go:build linux

package mqtt

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

// peekWaiter is a ReadWaiter for tests: a goroutine per wait, polling the
// socket through the runtime's poller with a peek (which consumes
// nothing). A real one (epoll, kqueue) waits without goroutines.
type peekWaiter struct{ waits atomic.Int64 }

func (w *peekWaiter) WaitRead(c net.Conn, _ time.Time, resume func()) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	w.waits.Add(1)
	go func() {
		// Read waits until readable, the connection's deadline (set by
		// the server) or its close; the resumed reader sees which.
		_ = rc.Read(func(fd uintptr) bool {
			var b [1]byte
			_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
			return !errors.Is(err, syscall.EAGAIN)
		})
		resume()
	}()
	return true
}

func (w *peekWaiter) Cancel(net.Conn) {} // Close ends the pending Read

type allowAll struct{ HookBase }

func (h *allowAll) ID() string { return "allow-all" }
func (h *allowAll) Provides(b byte) bool {
	return b == OnConnectAuthenticate || b == OnACLCheck
}
func (h *allowAll) OnConnectAuthenticate(*Client, packets.Packet) bool { return true }
func (h *allowAll) OnACLCheck(*Client, string, bool) bool              { return true }

// blockedReaders counts goroutines blocked reading a client's next packet.
func blockedReaders() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	return strings.Count(string(buf), "(*Client).ReadFixedHeader")
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(15 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("still not %s", what)
		}
	}
}

func dialConnect(t *testing.T, addr, id string, keepalive uint16) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetReadDeadline(time.Now().Add(15 * time.Second))
	pk := packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Connect},
		ProtocolVersion: 4,
		Connect: packets.ConnectParams{
			ProtocolName: []byte("MQTT"), Clean: true,
			Keepalive: keepalive, ClientIdentifier: id,
		},
	}
	var buf bytes.Buffer
	if err := pk.ConnectEncode(&buf); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(buf.Bytes()); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(c)
	ack := make([]byte, 4)
	if _, err := io.ReadFull(r, ack); err != nil || ack[0] != 0x20 || ack[3] != 0 {
		t.Fatalf("CONNACK % x, %v", ack, err)
	}
	return c, r
}

// With a ReadWaiter, a connected client that sends nothing holds no
// goroutine blocked in Read; its packets are still handled (a ping), a
// client that lets its keepalive pass is disconnected, one that leaves is
// ended (its clean session removed), and Close returns.
func TestReadWaiterClients(t *testing.T) {
	w := new(peekWaiter)
	s := New(&Options{ReadWaiter: w, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err := s.AddHook(new(allowAll), nil); err != nil {
		t.Fatal(err)
	}
	ln := listeners.NewTCP(listeners.Config{ID: "t", Address: "127.0.0.1:0"})
	if err := s.AddListener(ln); err != nil {
		t.Fatal(err)
	}
	if err := s.Serve(); err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			_ = s.Close()
		}
	})

	const n = 5
	conns := make([]net.Conn, n)
	readers := make([]*bufio.Reader, n)
	for i := range conns {
		conns[i], readers[i] = dialConnect(t, ln.Address(), fmt.Sprintf("c%d", i), 60)
	}
	waitUntil(t, "waiting without goroutines", func() bool { return blockedReaders() == 0 && w.waits.Load() >= n })

	for i, c := range conns {
		if _, err := c.Write([]byte{0xc0, 0}); err != nil {
			t.Fatal(err)
		}
		resp := make([]byte, 2)
		if _, err := io.ReadFull(readers[i], resp); err != nil || resp[0] != 0xd0 {
			t.Fatalf("PINGRESP % x, %v", resp, err)
		}
	}
	waitUntil(t, "waiting again", func() bool { return blockedReaders() == 0 && w.waits.Load() >= 2*n })

	quiet, qr := dialConnect(t, ln.Address(), "quiet", 1)
	if _, err := qr.ReadByte(); !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("quiet client: read %v, want the server to close the connection", err)
	}
	_ = quiet.Close()

	_ = conns[0].Close()
	waitUntil(t, "c0 ended", func() bool { _, ok := s.Clients.Get("c0"); return !ok })
	if _, ok := s.Clients.Get("c1"); !ok {
		t.Fatal("c1 gone too")
	}

	closed = true
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "all clients ended", func() bool { return atomic.LoadInt64(&s.Info.ClientsConnected) == 0 })
}

// A connection the ReadWaiter does not support (here a pipe) is read by
// its goroutine as without a waiter: EstablishConnection returns when the
// client leaves.
func TestReadWaiterUnsupportedConnection(t *testing.T) {
	w := new(peekWaiter)
	s := New(&Options{ReadWaiter: w, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err := s.AddHook(new(allowAll), nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	client, server := net.Pipe()
	done := make(chan error, 1)
	go func() { done <- s.EstablishConnection("pipe", server) }()
	pk := packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Connect},
		ProtocolVersion: 4,
		Connect:         packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 60, ClientIdentifier: "p"},
	}
	var buf bytes.Buffer
	if err := pk.ConnectEncode(&buf); err != nil {
		t.Fatal(err)
	}
	_ = client.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := client.Write(buf.Bytes()); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(client)
	ack := make([]byte, 4)
	if _, err := io.ReadFull(r, ack); err != nil || ack[0] != 0x20 {
		t.Fatalf("CONNACK % x, %v", ack, err)
	}
	waitUntil(t, "read by its goroutine", func() bool { return blockedReaders() == 1 })
	if _, err := client.Write([]byte{0xc0, 0}); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(r, ack[:2]); err != nil || ack[0] != 0xd0 {
		t.Fatalf("PINGRESP % x, %v", ack[:2], err)
	}
	select {
	case err := <-done:
		t.Fatalf("EstablishConnection returned %v while the client is connected", err)
	default:
	}
	_ = client.Close()
	if err := <-done; err == nil {
		t.Fatal("EstablishConnection: nil after the connection broke")
	}
	if w.waits.Load() != 0 {
		t.Fatalf("%d waits for a pipe", w.waits.Load())
	}
}

// gateWaiter is a ReadWaiter whose first wait is held at its start until
// the test lets it register; it reports when Cancel is called and calls
// the resume of a wait registered when cancelled, as a real one does.
type gateWaiter struct {
	entered, proceed, cancelled chan struct{}
	held                        atomic.Bool
	mu                          sync.Mutex
	resume                      func()
}

func (w *gateWaiter) WaitRead(_ net.Conn, _ time.Time, resume func()) bool {
	if w.held.CompareAndSwap(false, true) {
		close(w.entered)
		<-w.proceed
	}
	w.mu.Lock()
	w.resume = resume
	w.mu.Unlock()
	return true
}

func (w *gateWaiter) Cancel(net.Conn) {
	w.mu.Lock()
	resume := w.resume
	w.resume = nil
	w.mu.Unlock()
	select {
	case <-w.cancelled:
	default:
		close(w.cancelled)
	}
	if resume != nil {
		go resume()
	}
}

// A client stopped while its reader hands its wait to the ReadWaiter
// still ends: the hand-off either registers before Stop's Cancel (which
// then resumes it) or is not made. Registered after the Cancel, it would
// wait on a closed socket for good (a real waiter never hears of it), and
// Close would wait for that client forever.
func TestReadWaiterStopDuringHandOff(t *testing.T) {
	w := &gateWaiter{entered: make(chan struct{}), proceed: make(chan struct{}), cancelled: make(chan struct{})}
	s := New(&Options{ReadWaiter: w, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err := s.AddHook(new(allowAll), nil); err != nil {
		t.Fatal(err)
	}
	ln := listeners.NewTCP(listeners.Config{ID: "t", Address: "127.0.0.1:0"})
	if err := s.AddListener(ln); err != nil {
		t.Fatal(err)
	}
	if err := s.Serve(); err != nil {
		t.Fatal(err)
	}
	dialConnect(t, ln.Address(), "c", 60)
	<-w.entered
	cl, ok := s.Clients.Get("c")
	if !ok {
		t.Fatal("no client c")
	}
	go cl.Stop(errors.New("stopped by the test"))
	// Before the fix Stop cancels at once, with nothing registered yet;
	// after it, Stop waits for the hand-off, so no Cancel comes first.
	select {
	case <-w.cancelled:
	case <-time.After(100 * time.Millisecond):
	}
	close(w.proceed)
	waitUntil(t, "the stopped client ended", func() bool { return atomic.LoadInt64(&s.Info.ClientsConnected) == 0 })
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Close waits for a client that never ends")
	}
}
