package node

import (
	"context"
	"errors"
	"net/netip"
	"testing"

	"github.com/edgechat/edgechat/cluster"
)

// The members' addresses come from their cluster addresses: an IP as it
// is (IPv4-mapped IPv6 unmapped), a name resolved (the Kubernetes pods'
// stable names); a name that does not resolve keeps what it resolved to
// before, and a member that left is forgotten.
func TestMemberAddrs(t *testing.T) {
	m := newMemberAddrs()
	dns := map[string][]netip.Addr{"edgechat-1.edgechat-raft": {netip.MustParseAddr("10.1.0.7"), netip.MustParseAddr("fd00::7")}}
	m.lookup = func(_ context.Context, host string) ([]netip.Addr, error) {
		if a, ok := dns[host]; ok {
			return a, nil
		}
		return nil, errors.New("no such host")
	}
	members := []cluster.Member{
		{Name: "edgechat-0", Addr: "[::ffff:10.1.0.6]:7946"},
		{Name: "edgechat-1", Addr: "edgechat-1.edgechat-raft:7946"},
		{Name: "edgechat-2", Addr: "edgechat-2.edgechat-raft:7946"}, // not resolvable yet
	}
	m.update(context.Background(), members)
	for _, c := range []struct {
		addr, node string
		want       bool
	}{
		{"10.1.0.6", "edgechat-0", true},
		{"::ffff:10.1.0.6", "edgechat-0", true},
		{"10.1.0.6", "edgechat-1", false}, // another member's address
		{"10.1.0.7", "edgechat-1", true},
		{"fd00::7", "edgechat-1", true},
		{"10.1.0.8", "edgechat-2", false},
		{"10.1.0.6", "stranger", false},
	} {
		if got := m.Has(netip.MustParseAddr(c.addr), c.node); got != c.want {
			t.Errorf("Has(%s, %s) = %v, want %v", c.addr, c.node, got, c.want)
		}
	}
	// edgechat-1's name stops resolving for a moment; edgechat-2's
	// resolves now; edgechat-0 leaves.
	delete(dns, "edgechat-1.edgechat-raft")
	dns["edgechat-2.edgechat-raft"] = []netip.Addr{netip.MustParseAddr("10.1.0.8")}
	m.update(context.Background(), members[1:])
	if !m.Has(netip.MustParseAddr("10.1.0.7"), "edgechat-1") || !m.Has(netip.MustParseAddr("10.1.0.8"), "edgechat-2") ||
		m.Has(netip.MustParseAddr("10.1.0.6"), "edgechat-0") {
		t.Fatalf("after the second update: %v", m.byNode)
	}
}
