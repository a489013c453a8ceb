package e2e_test

import (
	"context"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	edgechat "github.com/edgechat/edgechat/clients/go"
	"github.com/edgechat/edgechat/node/nodetest"
)

// blackhole is a TCP proxy that, once swallowing, forwards nothing more
// either way and keeps every connection open: a node that vanished
// without a reset (powered off, cut off by a partition that drops
// packets), as a client sees it.
type blackhole struct {
	ln      net.Listener
	swallow atomic.Bool
}

func newBlackhole(t *testing.T, target string) *blackhole {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &blackhole{ln: ln}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				_ = c.Close()
				continue
			}
			t.Cleanup(func() { _ = c.Close(); _ = s.Close() })
			go b.pipe(s, c)
			go b.pipe(c, s)
		}
	}()
	return b
}

func (b *blackhole) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !b.swallow.Load() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (b *blackhole) URL() string { return "http://" + b.ln.Addr().String() }

// The catch-up sync does not hang on a node that vanished without a
// reset: its request gets no answer and is given up after a while, and
// the next node's API answers. Before, the sync waited for that answer
// for as long as the kernel kept the connection (many minutes): every
// sync after it queued behind it, Sync never returned, and what was
// committed meanwhile reached the client only live, if at all.
func TestSyncDoesNotHangOnANodeThatVanished(t *testing.T) {
	nodes := nodetest.StartCluster(t, 3)
	n1, n2 := nodes[0], nodes[1]
	aliceTok, bobTok := n1.NewUser(t, "alice"), n1.NewUser(t, "bob")
	bh := newBlackhole(t, strings.TrimPrefix(n1.HTTPURL, "http://"))
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	alice := dial(t, []string{n2.WSURL}, "", aliceTok, nil, nil)
	bb := newInbox()
	bob := dial(t, []string{n2.MQTTURL}, "", bobTok, bb, func(o *edgechat.Options) {
		o.HTTPURL, o.HTTPURLs = bh.URL(), []string{n2.HTTPURL}
	})
	if err := bob.Sync(ctx); err != nil { // through n1, which answers
		t.Fatal(err)
	}
	bh.swallow.Store(true)
	m, err := alice.Send(ctx, "bob", "while n1 is gone")
	if err != nil {
		t.Fatal(err)
	}
	bb.waitOnce(t, m.ID) // live, through n2
	start := time.Now()
	sctx, scancel := context.WithTimeout(ctx, 60*time.Second)
	defer scancel()
	if err := bob.Sync(sctx); err != nil {
		t.Fatalf("bob's Sync with n1 gone silent (n2 answers): %v after %v", err, time.Since(start).Round(time.Second))
	}
	if !strings.HasPrefix(bob.HTTPURL(), n2.HTTPURL) {
		t.Fatalf("bob's API is %s, want n2's", bob.HTTPURL())
	}
	t.Logf("Sync returned after %v", time.Since(start).Round(100*time.Millisecond))
}
