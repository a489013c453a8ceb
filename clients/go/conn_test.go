package edgechat

import (
	"bytes"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/testutil"
)

// A server that says something and closes while the client writes
// (a takeover's DISCONNECT 0x8E, the client's heartbeat under way): the
// client's write fails, and the failure waits until the client has read
// what the server said, still in the socket's buffer after the reset.
// Without the wait paho closed the connection on the write's error and
// the DISCONNECT was never read (the SDK's takeover end-to-end test
// failed one run in five on a loaded machine: connections lost with
// "write: broken pipe" and no takeover seen).
func TestAFailedWriteWaitsUntilWhatTheServerSaidIsRead(t *testing.T) {
	defer func(d time.Duration) { writeErrorHold = d }(writeErrorHold)
	writeErrorHold = time.Minute // only the read may end the wait here

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	said := []byte{0xE0, 0x01, 0x8E} // DISCONNECT, session taken over
	served := make(chan error, 1)
	go func() {
		s, err := ln.Accept()
		if err != nil {
			served <- err
			return
		}
		if _, err := s.Write(said); err != nil {
			served <- err
			return
		}
		// A close with the client's bytes unread and no linger: a reset,
		// as a server that drops a taken-over connection sends.
		buf := make([]byte, 1)
		if _, err := io.ReadFull(s, buf); err != nil {
			served <- err
			return
		}
		_ = s.(*net.TCPConn).SetLinger(0)
		served <- s.Close()
	}()
	raw, err := dialRaw(t.Context(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c := raw.(*readFirstConn)
	defer c.Close()
	// Write on the socket beneath until it fails: the server has reset
	// the connection.
	if _, err := c.Conn.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	testutil.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		if _, err := c.Conn.Write([]byte("x")); err == nil {
			return errors.New("writes on a reset connection keep succeeding")
		}
		return nil
	})

	wrote := make(chan error, 1)
	go func() {
		_, err := c.Write([]byte("heartbeat"))
		wrote <- err
	}()
	select {
	case err := <-wrote:
		t.Fatalf("the failed write returned (%v) before anything was read", err)
	case <-time.After(100 * time.Millisecond):
	}
	got := make([]byte, len(said))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("what the server said before the reset is not readable: %v", err)
	}
	if !bytes.Equal(got, said) {
		t.Fatalf("read %x, want %x", got, said)
	}
	select {
	case err := <-wrote:
		t.Fatalf("the failed write returned (%v) while the read side had not ended", err)
	case <-time.After(50 * time.Millisecond):
	}
	if _, err := c.Read(got); err == nil {
		t.Fatal("a read after the server's words succeeded on a reset connection")
	}
	select {
	case err := <-wrote:
		if err == nil {
			t.Fatal("the write on a reset connection succeeded")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the failed write still waits after the read side ended")
	}
}

// Close ends the wait of a failed write (paho closes the connection as
// soon as it has read a DISCONNECT), and a write that timed out does not
// wait at all.
func TestAFailedWriteWaitsNoLongerThanClose(t *testing.T) {
	defer func(d time.Duration) { writeErrorHold = d }(writeErrorHold)
	writeErrorHold = time.Minute

	failing := &scriptedConn{writeErr: errors.New("broken pipe"), readGate: make(chan struct{})}
	c := newReadFirstConn(failing)
	wrote := make(chan error, 1)
	go func() {
		_, err := c.Write([]byte("x"))
		wrote <- err
	}()
	select {
	case err := <-wrote:
		t.Fatalf("the failed write returned (%v) with the read side open", err)
	case <-time.After(100 * time.Millisecond):
	}
	_ = c.Close()
	select {
	case err := <-wrote:
		if err == nil || err.Error() != "broken pipe" {
			t.Fatalf("write error %v, want broken pipe", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a failed write still waits after Close")
	}

	timedOut := newReadFirstConn(&scriptedConn{writeErr: timeoutError{}, readGate: make(chan struct{})})
	start := time.Now()
	if _, err := timedOut.Write([]byte("x")); !errors.Is(err, timeoutError{}) {
		t.Fatalf("write error %v, want the timeout", err)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Fatalf("a timed-out write waited %v for the read side", d)
	}
}

// scriptedConn fails every Write with writeErr; Read waits for readGate.
type scriptedConn struct {
	net.Conn
	writeErr error
	readGate chan struct{}
}

func (c *scriptedConn) Write([]byte) (int, error) { return 0, c.writeErr }
func (c *scriptedConn) Read([]byte) (int, error) {
	<-c.readGate
	return 0, io.EOF
}
func (c *scriptedConn) Close() error { return nil }

type timeoutError struct{}

func (timeoutError) Error() string   { return "i/o timeout" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }
