package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/internal/peerrpc"
	"github.com/edgechat/edgechat/internal/wire"
)

// EchoService is a test RPC service.
type EchoService struct {
	block chan struct{}
}

type EchoArgs struct{ Text string }
type EchoReply struct{ Text string }

func (e *EchoService) Echo(a *EchoArgs, r *EchoReply) error {
	if a.Text == "fail" {
		return errors.New("echo refused")
	}
	r.Text = strings.ToUpper(a.Text)
	return nil
}

// Hang blocks until the test releases it.
func (e *EchoService) Hang(a *EchoArgs, r *EchoReply) error {
	<-e.block
	return nil
}

func (e *EchoService) methods() peerrpc.Methods {
	return peerrpc.Methods{"Echo": peerrpc.Method(e.Echo), "Hang": peerrpc.Method(e.Hang)}
}

func TestRPCBetweenNodes(t *testing.T) {
	a := startNode(t, nodeOpts{bootstrap: true})
	b := startNode(t, nodeOpts{tweak: func(c *Config) { c.NodeName = "n2" }})
	svc := &EchoService{block: make(chan struct{})}
	t.Cleanup(func() { close(svc.block) })
	if err := b.RegisterRPC("Echo", svc.methods()); err != nil {
		t.Fatal(err)
	}
	if err := b.RegisterRPC("Cluster", svc.methods()); err == nil {
		t.Fatal("reserved service name accepted")
	}
	if err := b.RegisterRPC("Echo", svc.methods()); err == nil {
		t.Fatal("service registered twice")
	}
	ctx := context.Background()
	var r EchoReply
	if err := a.Call(ctx, b.Addr(), "Echo.Echo", &EchoArgs{Text: "hi"}, &r); err != nil || r.Text != "HI" {
		t.Fatalf("Echo = %q, %v", r.Text, err)
	}
	// Handler errors arrive as text; the connection stays usable.
	err := a.Call(ctx, b.Addr(), "Echo.Echo", &EchoArgs{Text: "fail"}, &r)
	var se peerrpc.ServerError
	if !errors.As(err, &se) || !strings.Contains(err.Error(), "echo refused") || errors.Is(err, wire.ErrUnavailable) {
		t.Fatalf("handler error: %v", err)
	}
	if err := a.Call(ctx, b.Addr(), "Echo.Nope", &EchoArgs{}, &r); !errors.As(err, &se) {
		t.Fatalf("unknown method: %v", err)
	}
	// Many concurrent calls share the pooled connection.
	errs := make(chan error, 50)
	for i := range 50 {
		go func() {
			var r EchoReply
			err := a.Call(ctx, b.Addr(), "Echo.Echo", &EchoArgs{Text: fmt.Sprint("x", i)}, &r)
			if err == nil && r.Text != fmt.Sprint("X", i) {
				err = fmt.Errorf("reply %q", r.Text)
			}
			errs <- err
		}()
	}
	for range 50 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}

	// Every call has a deadline: a handler that never answers costs the
	// caller its ctx, and the next call gets through on a new connection.
	cctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	err = a.Call(cctx, b.Addr(), "Echo.Hang", &EchoArgs{}, &r)
	if !errors.Is(err, ErrPeerUnreachable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("hung call: %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("hung call returned after %v", d)
	}
	if err := a.Call(ctx, b.Addr(), "Echo.Echo", &EchoArgs{Text: "again"}, &r); err != nil || r.Text != "AGAIN" {
		t.Fatalf("call after a timeout = %q, %v", r.Text, err)
	}

	// A dead address fails fast and is marked as not sent.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	_ = ln.Close()
	if err := a.Call(ctx, dead, "Echo.Echo", &EchoArgs{}, &r); !errors.Is(err, ErrPeerUnreachable) || !errors.Is(err, errNotSent) {
		t.Fatalf("dead peer: %v", err)
	}

	// A peer that restarts: the pooled connection breaks and the next
	// call redials.
	bAddr := b.Addr()
	b.stop(t)
	if err := a.Call(ctx, bAddr, "Echo.Echo", &EchoArgs{Text: "x"}, &r); !errors.Is(err, ErrPeerUnreachable) {
		t.Fatalf("stopped peer: %v", err)
	}
	b2 := startNode(t, nodeOpts{dataDir: t.TempDir(), tweak: func(c *Config) { c.NodeName = "n2"; c.BindAddr = bAddr }})
	if err := b2.RegisterRPC("Echo", (&EchoService{}).methods()); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		return a.Call(ctx, bAddr, "Echo.Echo", &EchoArgs{Text: "back"}, &r)
	})
	if r.Text != "BACK" {
		t.Fatalf("after restart: %q", r.Text)
	}
}

func TestMuxRejectsGarbage(t *testing.T) {
	tn := startNode(t, nodeOpts{bootstrap: true})
	waitReady(t, tn.Raft)
	for _, first := range []byte{0x00, 'G', 0xFF} {
		c, err := net.Dial("tcp", tn.Addr())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write([]byte{first, 'x', 'y', 'z'}); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := c.Read(make([]byte, 16)); err != io.EOF && !errors.Is(err, net.ErrClosed) && !isReset(err) {
			t.Fatalf("first byte %#x: read %d, %v; want the connection closed", first, n, err)
		}
		_ = c.Close()
	}
	// A connection that says nothing and one that hangs up early.
	if c, err := net.Dial("tcp", tn.Addr()); err == nil {
		_ = c.Close()
	}
	// The listener still serves both protocols.
	var r InfoReply
	if err := tn.Call(context.Background(), tn.Addr(), "Cluster.Info", &InfoArgs{}, &r); err != nil || r.Name != "n1" || !r.HasState {
		t.Fatalf("Info after garbage = %+v, %v", r, err)
	}
	if _, err := tn.Propose(context.Background(), cmdPut, []byte("still=ok")); err != nil {
		t.Fatal(err)
	}
	// Raft's side: a second node joins through the same port.
	n2 := startNode(t, nodeOpts{tweak: func(c *Config) { c.NodeName = "n2"; c.Join = []string{tn.Addr()} }})
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if v, err := getKey(n2.db, "r/test/still"); err != nil || v != "ok" {
			return fmt.Errorf("n2 not replicated: %q, %v", v, err)
		}
		return nil
	})
}

func isReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection reset")
}

func TestForwardedBatchValidation(t *testing.T) {
	tn := startNode(t, nodeOpts{bootstrap: true})
	waitReady(t, tn.Raft)
	before := tn.Stats().LastIndex
	for name, data := range map[string][]byte{
		"garbage": []byte("not a batch"),
		"empty":   nil,
		"huge":    make([]byte, maxForwardBytes+1),
	} {
		var r ApplyReply
		if err := tn.Call(context.Background(), tn.Addr(), "Cluster.Apply", &ApplyArgs{Data: data}, &r); err != nil || r.Code != codeInvalid {
			t.Errorf("%s: %+v, %v", name, r, err)
		}
	}
	if after := tn.Stats().LastIndex; after != before {
		t.Fatalf("refused batches reached the log: %d -> %d", before, after)
	}
}

// A forwarded batch that asks for merging joins the leader's batcher and
// may share an entry with other proposals; the reply says where its
// commands landed, and the leader's own apply of that entry must show
// exactly those commands there. An older follower (no Merge) still gets
// an entry of its own.
func TestForwardedBatchMerged(t *testing.T) {
	tn := startNode(t, nodeOpts{bootstrap: true})
	waitReady(t, tn.Raft)
	release := tn.f.RetainResults()
	defer release()
	type sent struct {
		keys  []string
		reply ApplyReply
		err   error
	}
	const groups = 40
	out := make([]sent, groups)
	var wg sync.WaitGroup
	for g := range groups {
		wg.Go(func() {
			var cmds []fsm.Command
			for i := range 3 {
				k := fmt.Sprintf("g%d-%d", g, i)
				out[g].keys = append(out[g].keys, k)
				cmds = append(cmds, fsm.Command{Type: cmdPut, Payload: []byte(k + "=v")})
			}
			out[g].err = tn.Call(context.Background(), tn.Addr(), "Cluster.Apply",
				&ApplyArgs{Data: fsm.EncodeBatch(cmds), Merge: g%4 != 0}, &out[g].reply)
		})
		// The leader's own proposals, to share entries with.
		wg.Go(func() {
			if _, err := tn.Propose(context.Background(), cmdPut, fmt.Appendf(nil, "own%d=v", g)); err != nil {
				t.Errorf("own proposal: %v", err)
			}
		})
	}
	wg.Wait()
	for g, s := range out {
		if s.err != nil || s.reply.Code != "" {
			t.Fatalf("group %d: %+v, %v", g, s.reply, s.err)
		}
		if merge := g%4 != 0; s.reply.Merged != merge {
			t.Fatalf("group %d (Merge %v): answered Merged %v", g, merge, s.reply.Merged)
		}
		res, err := tn.f.WaitApplied(context.Background(), s.reply.Index)
		if err != nil {
			t.Fatalf("group %d: results of entry %d: %v", g, s.reply.Index, err)
		}
		if !s.reply.Merged && (s.reply.Offset != 0 || len(res) != len(s.keys)) {
			t.Fatalf("group %d without Merge: offset %d in an entry of %d commands", g, s.reply.Offset, len(res))
		}
		if s.reply.Offset+len(s.keys) > len(res) {
			t.Fatalf("group %d: offset %d + %d commands in an entry of %d", g, s.reply.Offset, len(s.keys), len(res))
		}
		for i, k := range s.keys {
			if v := res[s.reply.Offset+i].Value; v != "ok:"+k {
				t.Fatalf("group %d command %d: entry %d offset %d holds %v, want ok:%s", g, i, s.reply.Index, s.reply.Offset+i, v, k)
			}
		}
	}
}
