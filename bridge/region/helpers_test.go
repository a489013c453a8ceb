package region_test

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/internal/testutil/delayproxy"
	"github.com/edgechat/edgechat/internal/testutil/mqtttest"
	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
)

const secret = "a-shared-link-secret-of-the-test"

// proxy is what a link dials: a delayproxy without delay, whose address
// is known before the region behind it starts (so two regions can name
// each other), and cutting it is a link outage.
type proxy struct{ *delayproxy.Proxy }

func newProxy(t testing.TB) *proxy {
	t.Helper()
	p, err := delayproxy.New("", 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return &proxy{p}
}

func (p *proxy) URL() string           { return "tcp://" + p.Addr() }
func (p *proxy) setTarget(addr string) { p.SetTarget(addr) }
func (p *proxy) setCut(cut bool)       { p.SetCut(cut) }

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
	return startLinked(t, size, a, b, secrets, nil)
}

// startLinked is startRegions; with certs, every node serves MQTT over
// TLS with that certificate and the links dial tls:// and trust it;
// extra options apply to every node of both regions.
func startLinked(t *testing.T, size int, a, b string, secrets map[string]string, certs *testCert, extra ...nodetest.Option) (*region, *region) {
	t.Helper()
	return startNumbered(t, size, a, b, secrets, certs, map[string]int{a: 1, b: 2}, extra...)
}

// startNumbered is startLinked with the regions' --region-number given.
func startNumbered(t testing.TB, size int, a, b string, secrets map[string]string, certs *testCert, numbers map[string]int, extra ...nodetest.Option) (*region, *region) {
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
			c.RegionNumber = numbers[r.name]
			c.Links = []string{other.name + "=" + other.in.URL()}
			c.LinkSecretFile = file
			if certs != nil {
				c.TLSCert, c.TLSKey = certs.certFile, certs.keyFile
				c.LinkTLS = &tls.Config{RootCAs: certs.pool, MinVersion: tls.VersionTLS12}
				c.Links = []string{other.name + "=tls://" + strings.TrimPrefix(other.in.URL(), "tcp://")}
			}
		})
		opts := append([]nodetest.Option{opt}, extra...)
		if size == 1 {
			r.nodes = []*nodetest.Node{nodetest.StartNode(t, opts...)}
		} else {
			r.nodes = nodetest.StartCluster(t, size, opts...)
		}
		r.in.setTarget(r.nodes[0].MQTTAddr())
		if certs != nil {
			r.in.setTarget(r.nodes[0].MQTTSAddr())
		}
	}
	start(ra, rb)
	start(rb, ra)
	return ra, rb
}

// newUsers creates users in the region (on its first node; replicated).
func (r *region) newUser(t testing.TB, name string) string {
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

// testCert is a self-signed certificate for 127.0.0.1 in PEM files.
type testCert struct {
	certFile, keyFile string
	pool              *x509.CertPool
}

func newTestCert(t *testing.T) *testCert {
	c := testutil.WriteSelfSignedCert(t, "127.0.0.1")
	return &testCert{certFile: c.CertFile, keyFile: c.KeyFile, pool: c.Pool}
}

// mqttLinkAsEU connects to us's first node as eu's link would, but with a
// client ID of its own ($link/eu/q/test, the form of a node's query
// connection): the real link of eu, which holds $link/eu, would otherwise
// take the session over in the middle of the test.
func mqttLinkAsEU(t *testing.T, us *region) *mqtttest.Client {
	t.Helper()
	return mqtttest.MustDial(t, us.nodes[0].MQTTAddr(), mqtttest.Options{ClientID: "$link/eu/q/test", Username: "$link/eu", Password: secret})
}

// createdGroup is the answer of POST /user/groups.
type createdGroup struct {
	GroupID string `json:"groupId"`
}

// newGroup creates a group on n as tok's user with members.
func newGroup(t *testing.T, n *nodetest.Node, tok, name string, members ...string) createdGroup {
	t.Helper()
	var g createdGroup
	if code := call(t, n, tok, "POST", "/user/groups", map[string]any{"name": name, "members": members}, &g); code != http.StatusCreated {
		t.Fatalf("create group %q: %d", name, code)
	}
	return g
}
