package web_test

import (
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
)

// forwarder is a TCP listener that forwards each connection to the
// address set later: two regions each need the other's address before
// either has started.
type forwarder struct {
	ln     net.Listener
	target atomic.Pointer[string]
}

func newForwarder(t *testing.T) *forwarder {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &forwarder{ln: ln}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go f.forward(c)
		}
	}()
	return f
}

func (f *forwarder) forward(c net.Conn) {
	to := f.target.Load()
	if to == nil {
		_ = c.Close()
		return
	}
	up, err := net.Dial("tcp", *to)
	if err != nil {
		_ = c.Close()
		return
	}
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		_ = dst.Close()
		_ = src.Close()
	}
	go pipe(up, c)
	pipe(c, up)
}

// startRegionPair starts regions eu and us of one node each, linked both
// ways over MQTT.
func startRegionPair(t *testing.T) (eu, us *nodetest.Node) {
	t.Helper()
	secret := filepath.Join(t.TempDir(), "link-secret")
	if err := os.WriteFile(secret, []byte("a link secret of at least sixteen bytes\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	toEU, toUS := newForwarder(t), newForwarder(t)
	start := func(name string, number int, other string, to *forwarder) *nodetest.Node {
		return nodetest.StartNode(t, nodetest.WithConfig(func(c *node.Config) {
			c.Region, c.RegionNumber = name, number
			c.Links = []string{other + "=tcp://" + to.ln.Addr().String()}
			c.LinkSecretFile = secret
		}))
	}
	eu = start("eu", 1, "us", toUS)
	us = start("us", 2, "eu", toEU)
	euAddr, usAddr := eu.MQTTAddr(), us.MQTTAddr()
	toEU.target.Store(&euAddr)
	toUS.target.Store(&usAddr)
	return eu, us
}

// Two browsers in two regions: alice of eu finds bob of us by searching
// (his name comes qualified, bob@us), writes to him, and he gets it in
// his region's web client from alice@eu, reads it (alice sees it read),
// types (alice sees it) and replies; the reply reaches alice. Each
// browser talks to its own region only.
func TestChatAcrossRegions(t *testing.T) {
	eu, us := startRegionPair(t)
	alice, bob := browser(t), browser(t)
	register(t, alice, eu.HTTPURL, "alice")
	register(t, bob, us.HTTPURL, "bob")

	run(t, alice, "alice searches for bob and finds him in us",
		chromedp.SendKeys(chromedp.CSS(`#new-chat`), "bo"),
		poll(`[...document.querySelectorAll('#people option')].some(o => o.value === 'bob@us')`),
	)
	run(t, alice, "alice writes to bob@us",
		chromedp.SendKeys(chromedp.CSS(`#new-chat`), "b@us\n"),
		chromedp.WaitVisible(chromedp.CSS(`#composer`)),
		chromedp.SendKeys(chromedp.CSS(`#composer`), "hello from eu\n"),
		chromedp.WaitVisible(chromedp.CSS(`.msg.mine[data-id]`)),
	)
	if title := textOf(t, alice, `#conv-title`); title != "bob@us" {
		t.Fatalf("alice's conversation is titled %q", title)
	}
	run(t, bob, "bob sees the conversation with alice@eu, with one unread",
		chromedp.WaitVisible(chromedp.CSS(`[data-conv="d:alice@eu"] .badge`)),
		click(`[data-conv="d:alice@eu"]`),
		chromedp.WaitVisible(chromedp.CSS(`.msg[data-id]`)),
	)
	if got := textOf(t, bob, `.msg[data-id] .text`); got != "hello from eu" {
		t.Fatalf("bob sees %q", got)
	}
	run(t, alice, "alice sees her message read in us, and bob online",
		chromedp.WaitVisible(chromedp.CSS(`.msg.mine[data-state="read"]`)),
		chromedp.WaitVisible(chromedp.CSS(`[data-conv="d:bob@us"] .dot[data-presence="online"]`)),
	)
	run(t, bob, "bob types", chromedp.SendKeys(chromedp.CSS(`#composer`), "typing"))
	run(t, alice, "alice sees bob typing", chromedp.Poll[chromedp.Void](`document.querySelector('.conversation .sub').textContent === 'bob@us is typing…'`, chromedp.WithPollingInterval(50*time.Millisecond)))
	run(t, bob, "bob replies", chromedp.SendKeys(chromedp.CSS(`#composer`), " and replying\n"),
		chromedp.WaitVisible(chromedp.CSS(`.msg.mine[data-id]`)))
	run(t, alice, "alice gets the reply",
		chromedp.WaitVisible(chromedp.CSS(`.msg:not(.mine)[data-id]`)),
	)
	if got := textOf(t, alice, `.msg:not(.mine)[data-id] .text`); !strings.Contains(got, "and replying") {
		t.Fatalf("alice sees %q", got)
	}
}
