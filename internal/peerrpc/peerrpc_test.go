package peerrpc

import (
	"bytes"
	"context"
	"encoding/gob"
	"errors"
	"fmt"
	"net"
	"net/rpc"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/testutil"
)

type EchoArgs struct{ Text string }
type EchoReply struct{ Text string }

type echo struct{ release chan struct{} }

func (e *echo) Echo(a *EchoArgs, r *EchoReply) error {
	if a.Text == "fail" {
		return errors.New("echo refused")
	}
	r.Text = strings.ToUpper(a.Text)
	return nil
}

func (e *echo) Wait(a *EchoArgs, r *EchoReply) error {
	<-e.release
	r.Text = "late"
	return nil
}

func (e *echo) methods() Methods {
	return Methods{"Echo": Method(e.Echo), "Wait": Method(e.Wait)}
}

// listen serves handle on every connection accepted at 127.0.0.1:0.
func listen(t *testing.T, handle func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go handle(c)
		}
	}()
	return ln.Addr().String()
}

func startServer(t *testing.T) (string, *echo) {
	t.Helper()
	e := &echo{release: make(chan struct{})}
	t.Cleanup(func() { close(e.release) })
	s := NewServer()
	s.WriteTimeout = 5 * time.Second
	if err := s.Register("Echo", e.methods()); err != nil {
		t.Fatal(err)
	}
	if err := s.Register("Echo", e.methods()); err == nil {
		t.Fatal("a service registered twice")
	}
	return listen(t, s.ServeConn), e
}

func dial(t *testing.T, addr string) *Client {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c := NewClient(conn, 5*time.Second)
	t.Cleanup(func() { c.Close() })
	return c
}

func TestCallsAndErrors(t *testing.T) {
	addr, _ := startServer(t)
	c := dial(t, addr)
	ctx := context.Background()
	var r EchoReply
	if err := c.Call(ctx, "Echo.Echo", &EchoArgs{Text: "hi"}, &r); err != nil || r.Text != "HI" {
		t.Fatalf("Echo = %q, %v", r.Text, err)
	}
	// Refusals arrive as ServerError and leave the connection usable.
	for _, tc := range []struct {
		method string
		req    any
		want   string
	}{
		{"Echo.Echo", &EchoArgs{Text: "fail"}, "echo refused"},
		{"Echo.Nope", &EchoArgs{}, "can't find method Echo.Nope"},
		{"Other.Echo", &EchoArgs{}, "can't find service Other.Echo"},
		{"NoDot", &EchoArgs{}, "ill-formed"},
		{"Echo.Echo", &struct{ Text int }{7}, "wrong type"}, // a body of the wrong shape
	} {
		var se ServerError
		err := c.Call(ctx, tc.method, tc.req, &r)
		if !errors.As(err, &se) || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("%s: %v, want a ServerError with %q", tc.method, err, tc.want)
		}
		if unknown := tc.method == "Echo.Nope"; IsUnknownMethod(err) != unknown {
			t.Fatalf("%s: IsUnknownMethod(%v) = %v", tc.method, err, !unknown)
		}
		if err := c.Call(ctx, "Echo.Echo", &EchoArgs{Text: "again"}, &r); err != nil || r.Text != "AGAIN" {
			t.Fatalf("after %s: %q, %v", tc.method, r.Text, err)
		}
	}
	if c.Broken() || c.LastReceived().IsZero() {
		t.Fatalf("broken %v, last received %v", c.Broken(), c.LastReceived())
	}

	// Concurrent calls share the connection; each gets its own answer.
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for i := range 100 {
		wg.Go(func() {
			var r EchoReply
			err := c.Call(ctx, "Echo.Echo", &EchoArgs{Text: fmt.Sprint("x", i)}, &r)
			if err == nil && r.Text != fmt.Sprint("X", i) {
				err = fmt.Errorf("call %d got %q", i, r.Text)
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

// A caller that gives up gets its ctx's error at once, its reply is not
// written afterwards, and the connection goes on serving other calls
// while the slow one is still running on the server.
func TestCallGivesUpAtDeadline(t *testing.T) {
	addr, e := startServer(t)
	c := dial(t, addr)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	var slow EchoReply
	if err := c.Call(ctx, "Echo.Wait", &EchoArgs{}, &slow); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("slow call: %v", err)
	}
	var r EchoReply
	if err := c.Call(context.Background(), "Echo.Echo", &EchoArgs{Text: "b"}, &r); err != nil || r.Text != "B" {
		t.Fatalf("next call: %q, %v", r.Text, err)
	}
	e.release <- struct{}{} // the slow handler answers now: discarded
	if err := c.Call(context.Background(), "Echo.Echo", &EchoArgs{Text: "c"}, &r); err != nil || r.Text != "C" {
		t.Fatalf("call after the late answer: %q, %v", r.Text, err)
	}
	if slow.Text != "" {
		t.Fatalf("the abandoned reply was written: %q", slow.Text)
	}
}

// A connection that goes away fails the calls waiting on it and every
// later one with ErrShutdown.
func TestConnectionLoss(t *testing.T) {
	addr, _ := startServer(t)
	c := dial(t, addr)
	done := make(chan error, 1)
	go func() { done <- c.Call(context.Background(), "Echo.Wait", &EchoArgs{}, &EchoReply{}) }()
	testutil.CheckFor(t, 5*time.Second, time.Millisecond, func() error {
		c.mu.Lock()
		defer c.mu.Unlock()
		if len(c.pending) == 0 {
			return errors.New("not sent yet")
		}
		return nil
	})
	_ = c.Close()
	select {
	case err := <-done:
		if !errors.Is(err, ErrShutdown) {
			t.Fatalf("pending call: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the pending call did not end when the connection closed")
	}
	if err := c.Call(context.Background(), "Echo.Echo", &EchoArgs{}, &EchoReply{}); !errors.Is(err, ErrShutdown) {
		t.Fatalf("call on a closed client: %v", err)
	}
	if !c.Broken() {
		t.Fatal("not broken")
	}
}

// The wire is net/rpc's: a node of an earlier version (net/rpc client or
// server) and this one understand each other.
func TestWireCompatibleWithNetRPC(t *testing.T) {
	addr, _ := startServer(t)
	old, err := rpc.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	var r EchoReply
	if err := old.Call("Echo.Echo", &EchoArgs{Text: "from old"}, &r); err != nil || r.Text != "FROM OLD" {
		t.Fatalf("net/rpc client → peerrpc server: %q, %v", r.Text, err)
	}
	var se rpc.ServerError
	if err := old.Call("Echo.Echo", &EchoArgs{Text: "fail"}, &r); !errors.As(err, &se) || string(se) != "echo refused" {
		t.Fatalf("net/rpc client, refused: %v", err)
	}
	if err := old.Call("Echo.Nope", &EchoArgs{}, &r); !errors.As(err, &se) {
		t.Fatalf("net/rpc client, unknown method: %v", err)
	}

	srv := rpc.NewServer()
	if err := srv.RegisterName("Echo", &echo{}); err != nil {
		t.Fatal(err)
	}
	c := dial(t, listen(t, func(c net.Conn) { srv.ServeConn(c) }))
	if err := c.Call(context.Background(), "Echo.Echo", &EchoArgs{Text: "to old"}, &r); err != nil || r.Text != "TO OLD" {
		t.Fatalf("peerrpc client → net/rpc server: %q, %v", r.Text, err)
	}
	var mine ServerError
	if err := c.Call(context.Background(), "Echo.Echo", &EchoArgs{Text: "fail"}, &r); !errors.As(err, &mine) || string(mine) != "echo refused" {
		t.Fatalf("net/rpc server, refused: %v", err)
	}
	if err := c.Call(context.Background(), "Echo.Echo", &EchoArgs{Text: "ok"}, &r); err != nil || r.Text != "OK" {
		t.Fatalf("after a refusal: %q, %v", r.Text, err)
	}
}

// Whatever a peer sends, the server neither panics nor hangs: it answers
// or closes the connection.
func FuzzServeConn(f *testing.F) {
	var good bytes.Buffer
	enc := gob.NewEncoder(&good)
	for i, m := range []string{"Echo.Echo", "Echo.Nope", "Echo.Wait"} {
		_ = enc.Encode(&requestHeader{ServiceMethod: m, Seq: uint64(i)})
		_ = enc.Encode(&EchoArgs{Text: "x"})
	}
	f.Add(good.Bytes())
	f.Add([]byte{})
	f.Add([]byte{0x03, 0xff, 0x00})
	f.Add(append(good.Bytes()[:len(good.Bytes())/2:len(good.Bytes())/2], 0xff, 0xfe))
	f.Fuzz(func(t *testing.T, in []byte) {
		s := NewServer()
		e := &echo{release: make(chan struct{})}
		close(e.release)
		_ = s.Register("Echo", e.methods())
		server, client := net.Pipe()
		done := make(chan struct{})
		go func() { s.ServeConn(server); close(done) }()
		go func() { // drain answers
			buf := make([]byte, 4096)
			for {
				if _, err := client.Read(buf); err != nil {
					return
				}
			}
		}()
		_ = client.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = client.Write(in)
		_ = client.Close()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("ServeConn did not return after its peer closed")
		}
	})
}
