// SPDX-License-Identifier: MIT
// SPDX-FileCopyrightText: 2023 mochi-mqtt, mochi-co

//go:build unix

package mqtt

import (
	"errors"
	"net"
	"sync"
	"syscall"
	"unsafe"
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
	n   int
	err error
	fn  func(fd uintptr) bool
}

var nbWrites = sync.Pool{New: func() any {
	w := new(nbWrite)
	w.fn = w.write
	return w
}}

func (w *nbWrite) write(fd uintptr) bool {
	if len(w.b) == 0 {
		return true
	}
	// A raw system call: the socket is non-blocking, so the call cannot
	// block, and it spares the scheduler's entry to and exit from a
	// system call (syscall.Write) on every delivery; with them, a write
	// that the kernel takes a while over (on loopback it runs the
	// receiver's TCP input) let sysmon hand the processor to another
	// thread, a wake-up and a context switch on a busy core.
	n, _, errno := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&w.b[0])), uintptr(len(w.b)))
	w.n = int(n)
	if errno != 0 {
		w.n, w.err = -1, errno
	}
	return true // done: never wait for the socket to become writable
}

// writeNonBlocking writes as much of b as the socket takes now (the
// runtime keeps sockets in non-blocking mode) and never waits for it to
// become writable.
func writeNonBlocking(rc syscall.RawConn, b []byte) (int, error) {
	w := nbWrites.Get().(*nbWrite)
	w.b = b
	err := rc.Write(w.fn)
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
