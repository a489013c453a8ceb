package cluster

import (
	"net"
	"testing"
	"time"
)

// quiesce waits while a Raft connection's handler is between reads (in
// the middle of a command) and returns once it reads again or closes.
func TestMuxQuiesceWaitsForHandlersMidCommand(t *testing.T) {
	m := &mux{conns: map[net.Conn]struct{}{}, handed: map[*trackedConn]struct{}{}, closed: make(chan struct{})}
	a, b := net.Pipe()
	defer b.Close()
	tc := &trackedConn{Conn: a, m: m}
	m.handed[tc] = struct{}{}
	if m.quiesce(20 * time.Millisecond) {
		t.Fatal("quiesce returned while the handler was mid-command")
	}
	go func() {
		time.Sleep(30 * time.Millisecond)
		var buf [1]byte
		_, _ = tc.Read(buf[:]) // the handler waits for its next command
	}()
	start := time.Now()
	if !m.quiesce(5 * time.Second) {
		t.Fatal("quiesce timed out with the handler reading")
	}
	if time.Since(start) < 20*time.Millisecond {
		t.Fatal("quiesce did not wait for the handler")
	}
	_ = tc.Close() // the handler's end: it leaves the set
	if len(m.handed) != 0 {
		t.Fatal("a closed connection stayed in the set")
	}
}
