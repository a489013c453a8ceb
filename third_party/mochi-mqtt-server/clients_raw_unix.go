// SPDX-License-Identifier: MIT
// SPDX-FileCopyrightText: 2026 edgechat contributors

//go:build unix

package mqtt

import (
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"
)

// With Options.ClientRawSyscalls, a plain socket's reads (and direct
// writes) are made with syscall.RawSyscall instead of syscall.Syscall.
//
// Why: the runtime's monitor thread (sysmon) sleeps deeply while every P
// is idle, and the next system call made through syscall.Syscall
// (entersyscall) wakes it, with a futex, and resets its polling period to
// 20 µs. A broker that goes idle between messages (a client's publish
// every few milliseconds, the common case) therefore wakes sysmon for
// nearly every message it handles, and sysmon then wakes every 20 µs for a
// millisecond: on a busy core, context switches that cost more than the
// message itself. The runtime keeps sockets non-blocking, so read(2) and
// write(2) on them return at once (EAGAIN when they would block) and need
// none of that bookkeeping (its purpose is to hand the P to another thread
// while a call blocks). Waiting for data still goes through the runtime's
// poller (RawConn.Read), with the connection's deadlines.

// rawReader reads a plain socket with raw read(2) calls; the client's
// buffered reader reads from it instead of from the net.Conn.
type rawReader struct {
	c   net.Conn
	rc  syscall.RawConn
	b   []byte
	n   int
	err error
	fn  func(fd uintptr) bool // r.read, made once: a read allocates nothing
}

// newRawReader returns a rawReader for c, or nil if c is not a plain TCP or
// Unix socket; rc is c's RawConn if the caller has it already (direct
// writes), else nil.
func newRawReader(c net.Conn, rc syscall.RawConn) io.Reader {
	if rc == nil {
		rc = rawConn(c)
	}
	if rc == nil {
		return nil
	}
	r := &rawReader{c: c, rc: rc}
	r.fn = r.read
	return r
}

func (r *rawReader) read(fd uintptr) bool {
	for {
		n, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&r.b[0])), uintptr(len(r.b)))
		switch e {
		case 0:
			r.n = int(n)
			return true
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false // nothing yet: RawConn.Read waits for the poller, then calls again
		default:
			r.err = e
			return true
		}
	}
}

// Read reads what the socket holds, waiting for data if it holds none, as
// net.Conn.Read does: io.EOF once the peer has closed, the poller's errors
// (deadline exceeded, net.ErrClosed) and the system call's as a
// *net.OpError.
func (r *rawReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	r.b = p
	err := r.rc.Read(r.fn)
	n, rerr := r.n, r.err
	r.b, r.n, r.err = nil, 0, nil
	switch {
	case err != nil:
		return 0, err
	case rerr != nil:
		return 0, &net.OpError{Op: "read", Net: r.c.LocalAddr().Network(), Source: r.c.LocalAddr(), Addr: r.c.RemoteAddr(), Err: os.NewSyscallError("read", rerr)}
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// rawWrite is write(2) on a non-blocking socket, without the scheduler's
// system-call bookkeeping (see above). It returns -1 with the error.
func rawWrite(fd uintptr, b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	for {
		n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
		if e == syscall.EINTR {
			continue
		}
		if e != 0 {
			return -1, e
		}
		return int(n), nil
	}
}
