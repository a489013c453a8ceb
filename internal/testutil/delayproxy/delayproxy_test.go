package delayproxy_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/internal/testutil/delayproxy"
)

// echoServer echoes every connection back; arrivals receives, for every
// chunk it reads, the time it read it.
func echoServer(t *testing.T) (addr string, arrivals chan time.Time) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	arrivals = make(chan time.Time, 1<<16)
	var wg sync.WaitGroup
	t.Cleanup(func() { _ = ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				buf := make([]byte, 64<<10)
				for {
					n, err := c.Read(buf)
					if n > 0 {
						select {
						case arrivals <- time.Now():
						default:
						}
						if _, werr := c.Write(buf[:n]); werr != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String(), arrivals
}

func start(t *testing.T, target string, d time.Duration) *delayproxy.Proxy {
	t.Helper()
	p, err := delayproxy.New(target, d)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// TestDelayEachWay: a byte reaches the target no earlier than the delay
// after it was written, and its echo comes back no earlier than twice
// the delay; several writes in a row each keep their own delay, not one
// delay per write in turn (the throughput is not limited).
func TestDelayEachWay(t *testing.T) {
	const d = 40 * time.Millisecond
	addr, arrivals := echoServer(t)
	p := start(t, addr, d)
	c := dial(t, p.Addr())

	sent := time.Now()
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if at := testutil.Receive(t, arrivals, 5*time.Second); at.Sub(sent) < d {
		t.Fatalf("reached the target %v after it was sent; want >= %v", at.Sub(sent), d)
	}
	buf := make([]byte, 1)
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
	if rtt := time.Since(sent); rtt < 2*d {
		t.Fatalf("echo after %v; want >= %v", rtt, 2*d)
	}

	// 50 writes 2 ms apart: one delay per write in turn would take 50×d
	// = 2 s; pipelined they all come back within about 100 ms + 2×d.
	start := time.Now()
	go func() {
		for i := range 50 {
			if _, err := c.Write([]byte{byte(i)}); err != nil {
				return
			}
			time.Sleep(2 * time.Millisecond) // pacing the writes is the test's point, not a wait
		}
	}()
	got := make([]byte, 50)
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	if took < 2*d || took > 25*d {
		t.Fatalf("50 paced writes echoed in %v; want between %v and %v", took, 2*d, 25*d)
	}
	for i, b := range got {
		if b != byte(i) {
			t.Fatalf("byte %d is %d", i, b)
		}
	}
}

// TestBytesAndOrderKept: 8 MiB of random data in writes of random sizes
// comes back (through the proxy twice) the same, in order, over several
// connections at once.
func TestBytesAndOrderKept(t *testing.T) {
	addr, _ := echoServer(t)
	p := start(t, addr, 5*time.Millisecond)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for k := range 4 {
		c := dial(t, p.Addr())
		data := make([]byte, 2<<20)
		r := rand.New(rand.NewPCG(uint64(k), 1))
		for i := 0; i < len(data); i += 8 {
			binary.LittleEndian.PutUint64(data[i:], r.Uint64())
		}
		wg.Add(2)
		go func() {
			defer wg.Done()
			for rest := data; len(rest) > 0; {
				n := min(len(rest), 1+r.IntN(70000))
				if _, err := c.Write(rest[:n]); err != nil {
					errs <- err
					return
				}
				rest = rest[n:]
			}
		}()
		go func() {
			defer wg.Done()
			got := make([]byte, len(data))
			if _, err := io.ReadFull(c, got); err != nil {
				errs <- err
				return
			}
			if !bytes.Equal(got, data) {
				errs <- errors.New("the data came back changed")
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// TestCutClosesAndRefuses: cutting closes the open connections (a reader
// gets an error, not a hang) and refuses new ones; restoring lets new
// connections through again with the delay.
func TestCutClosesAndRefuses(t *testing.T) {
	addr, _ := echoServer(t)
	p := start(t, addr, 10*time.Millisecond)
	c := dial(t, p.Addr())
	if _, err := c.Write([]byte("a")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1)
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
	if n := p.Conns(); n != 1 {
		t.Fatalf("%d connections open; want 1", n)
	}
	p.SetCut(true)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(buf); err == nil || isTimeout(err) {
		t.Fatalf("read after the cut: %v; want the connection closed", err)
	}
	testutil.CheckFor(t, 5*time.Second, time.Millisecond, func() error {
		if n := p.Conns(); n != 0 {
			return errors.New("connections still open after the cut")
		}
		return nil
	})
	c2 := dial(t, p.Addr())
	_ = c2.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c2.Read(buf); err == nil || isTimeout(err) {
		t.Fatalf("a connection while cut read %v; want it closed", err)
	}

	p.SetCut(false)
	c3 := dial(t, p.Addr())
	sent := time.Now()
	if _, err := c3.Write([]byte("b")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c3, buf); err != nil || buf[0] != 'b' {
		t.Fatalf("after restoring: %q, %v", buf, err)
	}
	if rtt := time.Since(sent); rtt < 20*time.Millisecond {
		t.Fatalf("echo after restoring in %v; want >= 20ms", rtt)
	}
}

// isTimeout tells a read that timed out (the connection was left open)
// from one that found it closed.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestNegativeDelayRefused(t *testing.T) {
	if _, err := delayproxy.New("127.0.0.1:1", -time.Millisecond); err == nil {
		t.Fatal("a negative delay was accepted")
	}
}
