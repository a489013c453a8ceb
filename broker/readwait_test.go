package broker

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/internal/testutil/mqtttest"
	"github.com/edgechat/edgechat/internal/wire"
)

// readersBlocked counts goroutines blocked reading an MQTT client's next
// packet (mochi's Client.ReadFixedHeader).
func readersBlocked() int {
	buf := make([]byte, 8<<20)
	buf = buf[:runtime.Stack(buf, true)]
	return strings.Count(string(buf), "server/v2.(*Client).ReadFixedHeader")
}

// TestIdleClientsHoldNoGoroutine: with the read waiter (the default on
// Linux), connected clients that send nothing hold no goroutine blocked in
// Read; without it, each holds one. Both ways, idle clients then still
// exchange messages.
func TestIdleClientsHoldNoGoroutine(t *testing.T) {
	for _, blocking := range []bool{false, true} {
		t.Run(fmt.Sprintf("blockingReads=%v", blocking), func(t *testing.T) {
			e := startBroker(t, func(c *Config) { c.blockingReads = blocking })
			if !blocking && e.b.rw == nil {
				t.Skip("no read waiter on this system")
			}
			const n = 20
			for i := range n {
				mustV5(t, e.addr, "idle", fmt.Sprintf("d%d", i))
			}
			waitIdle(t, blocking, n)
		})
	}
}

// TestIdleClientsResumeAndExchange: clients that have gone quiet (waiting
// through the read waiter, if any) are resumed by their next packet:
// subscribe, a durable publish and its delivery, both ways, after the
// clients were idle. Past busyPackets packets in quick succession a
// client is read in place; after a quiet second its next packet makes it
// wait through the read waiter again.
func TestIdleClientsResumeAndExchange(t *testing.T) {
	for _, blocking := range []bool{false, true} {
		t.Run(fmt.Sprintf("blockingReads=%v", blocking), func(t *testing.T) {
			e := startBroker(t, func(c *Config) { c.blockingReads = blocking })
			bob := mustV5(t, e.addr, "bob", "phone")
			alice := mustV5(t, e.addr, "alice", "phone")
			waitIdle(t, blocking, 2)
			bob.MustSub(t, "user/bob/newMessage")
			alice.MustSub(t, "user/alice/newMessage")
			waitIdle(t, blocking, 2)
			for i := range 3 {
				alice.Pub(t, "user/bob/newMessage", 1, fmt.Sprintf(`{"cid":"a%d","type":"text","body":"hi"}`, i))
				if got := nextFrom(t, bob, "alice"); got.CID != fmt.Sprintf("a%d", i) {
					t.Fatalf("bob got %+v", got)
				}
				if code, _ := bob.Pub(t, "user/alice/newMessage", 1, fmt.Sprintf(`{"cid":"b%d","type":"text","body":"hi"}`, i)); code != 0 {
					t.Fatalf("PUBACK 0x%02x", code)
				}
				if got := nextFrom(t, alice, "bob"); got.CID != fmt.Sprintf("b%d", i) {
					t.Fatalf("alice got %+v", got)
				}
			}
			time.Sleep(1100 * time.Millisecond) // mochi's idleHandoff: quiet for a second
			bob.MustSub(t, "user/bob/typing")
			alice.MustSub(t, "user/alice/typing")
			waitIdle(t, blocking, 2)
		})
	}
}

// nextFrom returns the next message c receives from the user from (a
// user's own messages come back to its devices too).
func nextFrom(t *testing.T, c *mqtttest.Client, from string) wire.Envelope {
	t.Helper()
	for {
		if env := envOf(t, c.Next(t).Payload); env.From == from {
			return env
		}
	}
}

// waitIdle waits until n clients are idle: none blocked in Read with the
// read waiter, n without.
func waitIdle(t *testing.T, blocking bool, n int) {
	t.Helper()
	testutil.CheckFor(t, waitFor, 5*time.Millisecond, func() error {
		got, want := readersBlocked(), 0
		if blocking {
			want = n
		}
		if got != want {
			return fmt.Errorf("%d goroutines blocked reading a client, want %d", got, want)
		}
		return nil
	})
}

// TestIdleClientKeepaliveExpires: a client that sends nothing for 1.5
// times its keepalive is disconnected, whether its wait is in a goroutine
// or with the read waiter (its timer); one that pings in time is not.
func TestIdleClientKeepaliveExpires(t *testing.T) {
	for _, blocking := range []bool{false, true} {
		t.Run(fmt.Sprintf("blockingReads=%v", blocking), func(t *testing.T) {
			e := startBroker(t, func(c *Config) { c.blockingReads = blocking })
			quiet := dialRawV5Keepalive(t, e.addr, "alice", "quiet", 1)
			pinging := dialRawV5Keepalive(t, e.addr, "bob", "pinging", 1)
			// The quiet one is closed by the server: its read ends with
			// EOF (not the test's own read deadline).
			ended := make(chan error, 1)
			go func() {
				_ = quiet.conn.SetReadDeadline(time.Now().Add(waitFor))
				_, err := quiet.r.ReadByte()
				ended <- err
			}()
			for {
				select {
				case err := <-ended:
					if !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
						t.Fatalf("quiet client's read ended with %v, want EOF", err)
					}
					// The pinging one, past the same time, is still served.
					pinging.ping()
					return
				case <-time.After(300 * time.Millisecond):
					pinging.ping()
				}
			}
		})
	}
}

// dialRawV5Keepalive is dialRawV5 with a keepalive in seconds.
func dialRawV5Keepalive(t *testing.T, addr, uid, device string, keepalive uint16) *rawV5 {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	c := &rawV5{t: t, conn: conn, r: bufio.NewReader(conn)}
	c.write(packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Connect},
		ProtocolVersion: 5,
		Connect: packets.ConnectParams{
			ProtocolName: []byte("MQTT"), Clean: true, Keepalive: keepalive,
			ClientIdentifier: uid + "/" + device,
			UsernameFlag:     true, Username: []byte(uid),
			PasswordFlag: true, Password: []byte("tok:" + uid),
		},
	})
	if ca := c.read(); ca.FixedHeader.Type != packets.Connack || ca.ReasonCode != 0 {
		t.Fatalf("CONNACK %+v", ca)
	}
	return c
}

// ping sends a PINGREQ and reads the PINGRESP.
func (c *rawV5) ping() {
	c.t.Helper()
	if _, err := c.conn.Write([]byte{0xc0, 0}); err != nil {
		c.t.Fatal(err)
	}
	_ = c.conn.SetReadDeadline(time.Now().Add(waitFor))
	var b [2]byte
	if _, err := io.ReadFull(c.r, b[:]); err != nil {
		c.t.Fatal(err)
	}
	if b != [2]byte{0xd0, 0} {
		c.t.Fatalf("got % x, want a PINGRESP", b)
	}
}

// TestReadWaiterHoldsNoSystemCall: the read waiter's event loop waits in
// the runtime's poller, not in a blocking epoll_wait. A goroutine blocked
// in a system call keeps its P until the runtime's monitor takes it back
// (up to 20 ms once that monitor has slowed down, which mochi's raw socket
// calls let it do): on one core every other goroutine would wait behind
// it each time the loop went back to waiting.
func TestReadWaiterHoldsNoSystemCall(t *testing.T) {
	e := startBroker(t, nil)
	if e.b.rw == nil {
		t.Skip("no read waiter on this system")
	}
	// A client that goes quiet, then sends: the loop wakes up and waits again.
	c := mustV5(t, e.addr, "quiet", "d1")
	waitIdle(t, false, 1)
	c.MustSub(t, "user/quiet/typing")
	waitIdle(t, false, 1)
	testutil.CheckFor(t, waitFor, 5*time.Millisecond, func() error {
		buf := make([]byte, 8<<20)
		buf = buf[:runtime.Stack(buf, true)]
		for _, g := range strings.Split(string(buf), "\n\n") {
			if !strings.Contains(g, "(*epollWaiter).loop") {
				continue
			}
			if head, _, _ := strings.Cut(g, "\n"); strings.Contains(head, "[syscall") {
				return fmt.Errorf("the read waiter's loop waits in a system call:\n%s", g)
			}
			return nil
		}
		return errors.New("no read waiter loop running")
	})
}
