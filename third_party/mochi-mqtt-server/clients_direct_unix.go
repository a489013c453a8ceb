// SPDX-License-Identifier: MIT
// SPDX-FileCopyrightText: 2023 mochi-mqtt, mochi-co

//go:build unix

package mqtt

import (
	"errors"
	"net"
	"sync"
	"syscall"
)

// rawConn is the socket of a plain TCP or Unix connection, for direct
// writes; nil for any other connection (TLS, WebSocket, a pipe).
func rawConn(c net.Conn) syscall.RawConn {
	switch c.(type) {
	case *net.TCPConn, *net.UnixConn:
	default:
		return nil
	}
	rc, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}

// nbWrite is one non-blocking write; pooled, with its callback made
// once, so that a write allocates nothing.
type nbWrite struct {
	b   []byte
	raw bool
	n   int
	err error
	fn  func(fd uintptr)
}

var nbWrites = sync.Pool{New: func() any {
	w := new(nbWrite)
	w.fn = w.write
	return w
}}

func (w *nbWrite) write(fd uintptr) {
	if w.raw {
		w.n, w.err = rawWrite(fd, w.b)
	} else {
		w.n, w.err = syscall.Write(int(fd), w.b)
	}
}

// writeNonBlocking writes as much of b as the socket takes now (the
// runtime keeps sockets in non-blocking mode) and never waits for it to
// become writable. raw makes the call with syscall.RawSyscall
// (Options.ClientRawSyscalls).
//
// The write is made through RawConn.Control, which only holds the socket
// open for the call, rather than RawConn.Write, which also takes the
// socket's write lock and resets the poller's write state and checks the
// write deadline, all for a wait that never comes: a few percent of a
// large fan-out's CPU. The socket's writes are serialised by the client's
// lock (every write to the connection holds it), and a deadline bounds a
// wait, which a non-blocking write does not make.
func writeNonBlocking(rc syscall.RawConn, b []byte, raw bool) (int, error) {
	w := nbWrites.Get().(*nbWrite)
	w.b, w.raw = b, raw
	err := rc.Control(w.fn)
	n, werr := w.n, w.err
	w.b, w.n, w.err = nil, 0, nil
	nbWrites.Put(w)
	if n < 0 {
		n = 0
	}
	if err == nil && werr != nil && !errors.Is(werr, syscall.EAGAIN) && !errors.Is(werr, syscall.EINTR) {
		err = werr
	}
	return n, err
}
