package nodetest

import (
	"io"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/edgechat/edgechat/node"
)

// LinkSecret is the link secret StartRegionPair gives both regions.
const LinkSecret = "a link secret of at least sixteen bytes"

// StartRegionPair starts two regions of one node each, named a and b
// (region numbers 1 and 2), linked both ways over MQTT with LinkSecret.
// Each links to the other through a forwarder on 127.0.0.1 (each needs
// the other's address before either has started). For outages, cut
// links and several nodes per region, see bridge/region's own harness.
func StartRegionPair(t testing.TB, a, b string, opts ...Option) (*Node, *Node) {
	t.Helper()
	secret := filepath.Join(t.TempDir(), "link-secret")
	if err := os.WriteFile(secret, []byte(LinkSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	toA, toB := newForwarder(t), newForwarder(t)
	start := func(name string, number int, other string, to *forwarder) *Node {
		link := WithConfig(func(c *node.Config) {
			c.Region, c.RegionNumber = name, number
			c.Links = []string{other + "=tcp://" + to.addr()}
			c.LinkSecretFile = secret
		})
		return StartNode(t, append([]Option{link}, opts...)...)
	}
	na := start(a, 1, b, toB)
	nb := start(b, 2, a, toA)
	toA.forwardTo(na.MQTTAddr())
	toB.forwardTo(nb.MQTTAddr())
	return na, nb
}

// forwarder is a TCP listener that forwards each connection to the
// address set later (none yet: the connection is closed).
type forwarder struct {
	ln     net.Listener
	target atomic.Pointer[string]
}

func newForwarder(t testing.TB) *forwarder {
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

func (f *forwarder) addr() string          { return f.ln.Addr().String() }
func (f *forwarder) forwardTo(addr string) { f.target.Store(&addr) }

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
