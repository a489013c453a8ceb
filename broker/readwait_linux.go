//go:build linux

package broker

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
)

// epollWaiter is mochi's ReadWaiter for plain TCP connections: one epoll
// instance and one goroutine wait for all the connected clients that have
// gone quiet, instead of a goroutine per client blocked in Read (its stack
// is at least 4 KiB; idle connections are most of a chat server's
// connections). TLS and WebSocket connections are not supported (their
// layers buffer data the socket no longer signals) and keep their reading
// goroutine.
//
// Each waiting connection's socket is registered one-shot: the first
// readiness event (data, or the peer closing) disarms it, and the resume
// callback runs on a new goroutine, which reads until the client is quiet
// again and re-arms it. A timer per connection resumes it at its keepalive
// deadline, so that its Read fails with the timeout as it would have in a
// blocked goroutine.
type epollWaiter struct {
	epfd int
	ep   *os.File // epfd, registered with the Go runtime's poller (see loop)
	wake [2]int   // a pipe whose read end is in the epoll set: Close writes to it
	log  *slog.Logger

	mu     sync.Mutex
	conns  map[int32]*waitingConn // by file descriptor, while registered
	closed bool
	done   chan struct{} // closed when the event loop has returned
}

// waitingConn is a registered connection.
type waitingConn struct {
	c      net.Conn
	resume func()      // pending callback; nil when not waiting
	timer  *time.Timer // resumes at the deadline; made on first use
}

var _ mqtt.ReadWaiter = (*epollWaiter)(nil)

// newReadWaiter starts an epoll waiter.
func newReadWaiter(log *slog.Logger) (*epollWaiter, error) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("broker: epoll: %w", err)
	}
	// Non-blocking, so that os.NewFile registers it with the runtime's
	// poller: an epoll instance is readable while it has events.
	if err := syscall.SetNonblock(epfd, true); err != nil {
		_ = syscall.Close(epfd)
		return nil, fmt.Errorf("broker: epoll: %w", err)
	}
	w := &epollWaiter{epfd: epfd, ep: os.NewFile(uintptr(epfd), "epoll"), log: log, conns: make(map[int32]*waitingConn), done: make(chan struct{})}
	if err := syscall.Pipe2(w.wake[:], syscall.O_CLOEXEC|syscall.O_NONBLOCK); err != nil {
		_ = w.ep.Close()
		return nil, fmt.Errorf("broker: epoll wake pipe: %w", err)
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(w.wake[0])}
	if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, w.wake[0], &ev); err != nil {
		w.closeFDs()
		return nil, fmt.Errorf("broker: epoll wake pipe: %w", err)
	}
	go w.loop()
	return w, nil
}

func (w *epollWaiter) closeFDs() {
	_ = syscall.Close(w.wake[0])
	_ = syscall.Close(w.wake[1])
	_ = w.ep.Close()
}

// WaitRead registers c (a *net.TCPConn) until it is readable, its deadline
// passes or Cancel. The registration is made while the socket's descriptor
// is held (Control), so a connection closed meanwhile is refused rather
// than a reused descriptor registered.
func (w *epollWaiter) WaitRead(c net.Conn, deadline time.Time, resume func()) bool {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return false
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return false
	}
	armed := false
	err = rc.Control(func(fd uintptr) { armed = w.arm(int32(fd), c, deadline, resume) })
	return err == nil && armed
}

func (w *epollWaiter) arm(fd int32, c net.Conn, deadline time.Time, resume func()) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return false
	}
	wc := w.conns[fd]
	op := syscall.EPOLL_CTL_MOD
	if wc == nil || wc.c != c {
		// New, or a stale entry of a connection closed without Cancel
		// (the kernel dropped its registration with the descriptor).
		wc = &waitingConn{c: c}
		op = syscall.EPOLL_CTL_ADD
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT, Fd: fd}
	err := syscall.EpollCtl(w.epfd, op, int(fd), &ev)
	if op == syscall.EPOLL_CTL_ADD && errors.Is(err, syscall.EEXIST) {
		err = syscall.EpollCtl(w.epfd, syscall.EPOLL_CTL_MOD, int(fd), &ev)
	} else if op == syscall.EPOLL_CTL_MOD && errors.Is(err, syscall.ENOENT) {
		err = syscall.EpollCtl(w.epfd, syscall.EPOLL_CTL_ADD, int(fd), &ev)
	}
	if err != nil {
		delete(w.conns, fd)
		return false
	}
	w.conns[fd] = wc
	wc.resume = resume
	if !deadline.IsZero() {
		d := time.Until(deadline)
		if wc.timer == nil {
			wc.timer = time.AfterFunc(d, func() { w.fire(fd, wc, false) })
		} else {
			wc.timer.Reset(d)
		}
	}
	return true
}

// fire runs wc's pending resume, if wc is still the connection registered
// on fd and waiting; spawn starts it on a new goroutine (from the event
// loop), else it runs on the caller's (a timer's own goroutine).
func (w *epollWaiter) fire(fd int32, wc *waitingConn, spawn bool) {
	w.mu.Lock()
	if w.conns[fd] != wc || wc.resume == nil {
		w.mu.Unlock()
		return
	}
	resume := wc.resume
	wc.resume = nil
	if wc.timer != nil {
		wc.timer.Stop()
	}
	w.mu.Unlock()
	if spawn {
		go resume()
	} else {
		resume()
	}
}

// Cancel unregisters c and resumes it if it was waiting. mochi calls it
// before closing c.
func (w *epollWaiter) Cancel(c net.Conn) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return
	}
	var resume func()
	_ = rc.Control(func(fd uintptr) {
		w.mu.Lock()
		defer w.mu.Unlock()
		wc := w.conns[int32(fd)]
		if wc == nil || wc.c != c {
			return
		}
		delete(w.conns, int32(fd))
		if !w.closed {
			_ = syscall.EpollCtl(w.epfd, syscall.EPOLL_CTL_DEL, int(fd), nil)
		}
		resume, wc.resume = wc.resume, nil
		if wc.timer != nil {
			wc.timer.Stop()
		}
	})
	if resume != nil {
		go resume()
	}
}

// loop waits for readiness events and resumes the connections. It waits
// through the runtime's poller (the epoll instance is itself pollable) and
// collects events without blocking: a blocking epoll_wait would hold the
// goroutine's P in the system call until the runtime's monitor (sysmon)
// takes it back, which takes up to 20 ms once sysmon has slowed down on a
// node whose own socket I/O makes no blocking calls (mochi's
// ClientRawSyscalls): every other goroutine would wait that long on a
// node running on one core.
func (w *epollWaiter) loop() {
	defer close(w.done)
	rc, err := w.ep.SyscallConn()
	if err != nil {
		w.log.Error("epoll wait failed: idle MQTT connections are resumed at their keepalive deadline only", "error", err)
		return
	}
	events := make([]syscall.EpollEvent, 128)
	var n int
	var werr error
	collect := func(fd uintptr) bool {
		for {
			n, werr = syscall.EpollWait(int(fd), events, 0)
			if werr != syscall.EINTR {
				return n > 0 || werr != nil // none yet: wait for the poller
			}
		}
	}
	for {
		if err := rc.Read(collect); err != nil || werr != nil {
			w.log.Error("epoll wait failed: idle MQTT connections are resumed at their keepalive deadline only", "error", errors.Join(err, werr))
			return
		}
		for _, ev := range events[:n] {
			if ev.Fd == int32(w.wake[0]) {
				return
			}
			w.mu.Lock()
			wc := w.conns[ev.Fd]
			w.mu.Unlock()
			if wc != nil {
				w.fire(ev.Fd, wc, true)
			}
		}
	}
}

// Close stops the event loop and resumes every waiting connection (their
// reads then see whatever ended them). Call it after mochi has closed its
// clients.
func (w *epollWaiter) Close() {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return
	}
	w.closed = true
	var pending []func()
	for fd, wc := range w.conns {
		if wc.resume != nil {
			pending = append(pending, wc.resume)
			wc.resume = nil
		}
		if wc.timer != nil {
			wc.timer.Stop()
		}
		delete(w.conns, fd)
	}
	w.mu.Unlock()
	_, _ = syscall.Write(w.wake[1], []byte{1})
	<-w.done
	w.closeFDs()
	for _, r := range pending {
		go r()
	}
}
