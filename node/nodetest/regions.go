package nodetest

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/edgechat/edgechat/internal/testutil/delayproxy"
	"github.com/edgechat/edgechat/node"
)

// LinkSecret is the link secret StartRegionPair gives both regions.
const LinkSecret = "a link secret of at least sixteen bytes"

// StartRegionPair starts two regions of one node each, named a and b
// (region numbers 1 and 2), linked both ways over MQTT with LinkSecret.
// Each links to the other through a proxy on 127.0.0.1 (each needs
// the other's address before either has started). For outages, cut
// links and several nodes per region, see bridge/region's own harness.
func StartRegionPair(t testing.TB, a, b string, opts ...Option) (*Node, *Node) {
	t.Helper()
	na, nb, _, _ := StartRegionPairProxied(t, a, b, opts...)
	return na, nb
}

// StartRegionPairProxied is StartRegionPair that also returns the
// proxies each region is reached through (intoA: b's link to a): cutting
// one is an outage of that link.
func StartRegionPairProxied(t testing.TB, a, b string, opts ...Option) (na, nb *Node, intoA, intoB *delayproxy.Proxy) {
	t.Helper()
	secret := filepath.Join(t.TempDir(), "link-secret")
	if err := os.WriteFile(secret, []byte(LinkSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	toA, toB := newForwarder(t), newForwarder(t)
	start := func(name string, number int, other string, to *delayproxy.Proxy) *Node {
		link := WithConfig(func(c *node.Config) {
			c.Region, c.RegionNumber = name, number
			c.Links = []string{other + "=tcp://" + to.Addr()}
			c.LinkSecretFile = secret
		})
		return StartNode(t, append([]Option{link}, opts...)...)
	}
	na = start(a, 1, b, toB)
	nb = start(b, 2, a, toA)
	toA.SetTarget(na.MQTTAddr())
	toB.SetTarget(nb.MQTTAddr())
	return na, nb, toA, toB
}

// newForwarder is a proxy without delay whose target is set later (none
// yet: connections are closed).
func newForwarder(t testing.TB) *delayproxy.Proxy {
	t.Helper()
	p, err := delayproxy.New("", 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}
