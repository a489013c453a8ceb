package region_test

import (
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
)

const secret = "a-shared-link-secret-of-the-test"

// proxy is a TCP forwarder on 127.0.0.1:0 that a link dials: its address
// is known before the region behind it starts (so two regions can name
// each other), and cutting it is a link outage.
type proxy struct {
	ln net.Listener

	mu     sync.Mutex
	target string // "" or cut: connections are closed at once
	cut    bool
	conns  map[net.Conn]bool
}

func newProxy(t *testing.T) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, conns: map[net.Conn]bool{}}
	t.Cleanup(func() { _ = ln.Close(); p.setCut(true) })
	go p.serve()
	return p
}

func (p *proxy) URL() string { return "tcp://" + p.ln.Addr().String() }

func (p *proxy) setTarget(addr string) {
	p.mu.Lock()
	p.target = addr
	p.mu.Unlock()
}

// setCut cuts the link (closing every connection through it) or heals it.
func (p *proxy) setCut(cut bool) {
	p.mu.Lock()
	p.cut = cut
	var open []net.Conn
	if cut {
		for c := range p.conns {
			open = append(open, c)
		}
	}
	p.mu.Unlock()
	for _, c := range open {
		_ = c.Close()
	}
}

func (p *proxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		target, cut := p.target, p.cut
		p.mu.Unlock()
		if cut || target == "" {
			_ = c.Close()
			continue
		}
		up, err := net.Dial("tcp", target)
		if err != nil {
			_ = c.Close()
			continue
		}
		p.mu.Lock()
		p.conns[c], p.conns[up] = true, true
		p.mu.Unlock()
		pipe := func(dst, src net.Conn) {
			_, _ = io.Copy(dst, src)
			_ = dst.Close()
			_ = src.Close()
			p.mu.Lock()
			delete(p.conns, dst)
			delete(p.conns, src)
			p.mu.Unlock()
		}
		go pipe(c, up)
		go pipe(up, c)
	}
}

// region is a running region: its nodes and the proxy other regions
// reach it through.
type region struct {
	name  string
	nodes []*nodetest.Node
	in    *proxy // other regions' links dial this
}

// leader is the node that leads the region's Raft group now.
func (r *region) leader(t *testing.T) *nodetest.Node {
	t.Helper()
	var l *nodetest.Node
	nodetest.CheckFor(t, 20e9, 20e6, func() error {
		for _, n := range r.nodes {
			if n.IsLeader() {
				l = n
				return nil
			}
		}
		return errors.New("no leader")
	})
	return l
}

// startRegions starts two regions of size nodes each, linked both ways
// through proxies, with the secrets given (secrets[name] is what region
// name's nodes hold in their secret file).
func startRegions(t *testing.T, size int, a, b string, secrets map[string]string) (*region, *region) {
	t.Helper()
	ra, rb := &region{name: a, in: newProxy(t)}, &region{name: b, in: newProxy(t)}
	start := func(r, other *region) {
		file := filepath.Join(t.TempDir(), "link-secret")
		s := secrets[r.name]
		if s == "" {
			s = secret
		}
		if err := os.WriteFile(file, []byte(s+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		opt := nodetest.WithConfig(func(c *node.Config) {
			c.Region = r.name
			c.Links = []string{other.name + "=" + other.in.URL()}
			c.LinkSecretFile = file
		})
		if size == 1 {
			r.nodes = []*nodetest.Node{nodetest.StartNode(t, opt)}
		} else {
			r.nodes = nodetest.StartCluster(t, size, opt)
		}
		r.in.setTarget(r.nodes[0].MQTTAddr())
	}
	start(ra, rb)
	start(rb, ra)
	return ra, rb
}

// newUsers creates users in the region (on its first node; replicated).
func (r *region) newUser(t *testing.T, name string) string {
	t.Helper()
	return r.nodes[0].NewUser(t, name)
}

type envelope struct {
	ID   string `json:"id"`
	From string `json:"from"`
	To   string `json:"to"`
	CID  string `json:"cid"`
	Body string `json:"body"`
}

func decode(t *testing.T, b []byte) envelope {
	t.Helper()
	var e envelope
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatalf("%q: %v", b, err)
	}
	return e
}

// counter reads the sum of a metric's series whose labels contain match.
func counter(t *testing.T, n *nodetest.Node, name, match string) float64 {
	t.Helper()
	mfs, err := n.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := ""
			for _, l := range m.GetLabel() {
				labels += l.GetName() + `="` + l.GetValue() + `",`
			}
			if match == "" || strings.Contains(labels, match) {
				sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
			}
		}
	}
	return sum
}
