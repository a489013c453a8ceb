// SPDX-License-Identifier: MIT
// SPDX-FileCopyrightText: 2026 edgechat contributors

package mqtt

import (
	"bufio"
	"errors"
	"io"
	"net"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// ReadWaiter waits for connections to become readable without a goroutine
// per connection, as an event loop does (epoll on Linux, kqueue on BSD).
// A connected client otherwise holds a goroutine blocked in Read, with its
// stack (4 KiB at best, more after a deep call), and a read buffer, for as
// long as it stays connected; for a server holding many mostly idle
// clients that is most of what a client costs. Set Options.ReadWaiter to
// use one.
type ReadWaiter interface {
	// WaitRead arranges for resume to be called, once, on a goroutine of
	// its own, when c has data to read or has been closed by its peer,
	// when deadline (if not zero) has passed, or when Cancel(c) is called.
	// It reports false if it cannot wait for c (a kind of connection it
	// does not support, or c is closed); the caller then reads from c as
	// usual, and resume is not called.
	WaitRead(c net.Conn, deadline time.Time, resume func()) bool

	// Cancel stops waiting for c, calling a pending resume now. The server
	// calls it before it closes c.
	Cancel(c net.Conn)
}

// readWaiting reads and handles the client's packets like Client.Read,
// except that when nothing is buffered it gives up its goroutine and its
// read buffer: it hands the wait for the next packet to
// Options.ReadWaiter, which calls it back on a new goroutine when data
// arrives. A busy client (busyPackets packets in a row, each less than
// idleHandoff after the one before) is read in place, as by Read, without
// the hand-off's cost (a system call and a new goroutine per wait), until
// it has been quiet for idleHandoff. When the client ends, readWaiting
// ends it as attachClient does.
//
// It returns nil once it has handed off a wait, else the error that ended
// the client (as attachClient without a waiter).
func (s *Server) readWaiting(cl *Client, listener string, connected bool) error {
	st := new(readState)
	st.resume = func() { _ = s.readResumed(cl, listener, connected, st, true) }
	return s.readResumed(cl, listener, connected, st, false)
}

// busyPackets is how many packets in quick succession make a client busy
// (see readWaiting).
const busyPackets = 8

// readState is what readWaiting keeps across hand-offs.
type readState struct {
	resume func() // calls readResumed again
	last   int64  // when the last packet's header was read, unix nanoseconds
	busy   int    // packets in a row less than idleHandoff apart
}

// readResumed is readWaiting's loop, started afresh each time the client
// is resumed.
func (s *Server) readResumed(cl *Client, listener string, connected bool, st *readState, resumed bool) error {
	err := cl.readUntilIdle(s.Options.ReadWaiter, s.receivePacket, st, resumed)
	if err == errWaiting {
		return nil
	}
	s.clientDisconnected(cl, listener, err)
	s.detachClient(cl, connected)
	return err
}

// errWaiting is readUntilIdle's report that the client's next packet is
// awaited by the ReadWaiter, which will call st.resume.
var errWaiting = errors.New("waiting for the next packet")

// readUntilIdle is Read with the hand-off described at readWaiting; it
// returns errWaiting once the wait is handed off. resumed says the
// ReadWaiter found the connection readable (or its deadline passed, or it
// was cancelled): the next read must then not extend the keepalive
// deadline first, so that a client which let it pass is disconnected.
func (cl *Client) readUntilIdle(w ReadWaiter, packetHandler ReadFn, st *readState, resumed bool) error {
	for {
		if cl.Closed() {
			return cl.endedBy()
		}

		if !resumed {
			cl.refreshDeadline(cl.State.Keepalive)
			if st.busy < busyPackets && (cl.Net.bconn == nil || cl.Net.bconn.Buffered() == 0) {
				cl.releaseReader()
				// From a successful WaitRead on, st.resume may run at any
				// moment on another goroutine: nothing of the client is
				// touched here again but the unlock. waitMu orders the
				// hand-off against Stop (see there).
				cl.State.waitMu.Lock()
				if cl.State.waitStopped {
					cl.State.waitMu.Unlock()
					return cl.endedBy() // as the Closed check above
				}
				waiting := w.WaitRead(cl.Net.Conn, keepaliveDeadline(cl.State.Keepalive), st.resume)
				cl.State.waitMu.Unlock()
				if waiting {
					return errWaiting
				}
				// Not a connection the waiter supports (TLS, WebSocket):
				// read it as without a waiter.
				cl.Net.bconn = cl.getReader()
				return cl.Read(packetHandler)
			}
		}
		resumed = false
		if cl.Net.bconn == nil {
			cl.Net.bconn = cl.getReader()
		}

		fh := new(packets.FixedHeader)
		if err := cl.ReadFixedHeader(fh); err != nil {
			return err
		}
		now := time.Now().UnixNano()
		if now-st.last < int64(idleHandoff) {
			st.busy++
		} else {
			st.busy = 0
		}
		st.last = now
		if err := cl.readAndHandle(fh, packetHandler); err != nil {
			return err
		}
	}
}

// releaseReader returns the client's read buffer, empty, to the server's
// pool: a waiting client holds none.
func (cl *Client) releaseReader() {
	r := cl.Net.bconn
	if r == nil || cl.ops.readers == nil {
		return
	}
	cl.Net.bconn = nil
	r.Reset(nil)
	cl.ops.readers.Put(r)
}

// getReader returns a read buffer for the client's connection, from the
// server's pool if it has one of the right size.
func (cl *Client) getReader() *bufio.Reader {
	size := cl.ops.options.ClientNetReadBufferSize
	if cl.ops.readers != nil {
		if r, ok := cl.ops.readers.Get().(*bufio.Reader); ok && r.Size() == size {
			r.Reset(cl.readSource())
			return r
		}
	}
	return bufio.NewReaderSize(cl.readSource(), size)
}

// readSource is what the client's buffered reader reads from.
func (cl *Client) readSource() io.Reader {
	if cl.Net.rawRead != nil {
		return cl.Net.rawRead
	}
	return cl.Net.Conn
}
