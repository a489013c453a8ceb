package node

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/edgechat/edgechat/cluster"
	"github.com/edgechat/edgechat/services/clusterapi"
)

// memberAddrs are the IP addresses of the cluster's members, by name: the
// host of each member's cluster address (--advertise-cluster, the one the
// others dial; a name is resolved). A node's requests to another node's
// HTTP API (a media read for its user, a segment copy) name it in
// httpapi.HeaderPeer; the gateway takes such a request from that
// member's address for the cluster's own traffic and does not rate-limit
// it as a client's (gateway.Deps.Peer). Nothing is known until the first
// refresh: until then such requests are limited as before.
type memberAddrs struct {
	mu     sync.RWMutex
	byNode map[string][]netip.Addr
	lookup func(ctx context.Context, host string) ([]netip.Addr, error)
}

// memberLookupTimeout bounds the resolution of one member's name.
const memberLookupTimeout = 2 * time.Second

func newMemberAddrs() *memberAddrs {
	return &memberAddrs{byNode: map[string][]netip.Addr{}, lookup: func(ctx context.Context, host string) ([]netip.Addr, error) {
		return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	}}
}

// Has tells whether addr is an address of the member named node.
func (m *memberAddrs) Has(addr netip.Addr, node string) bool {
	addr = addr.Unmap().WithZone("")
	m.mu.RLock()
	defer m.mu.RUnlock()
	return slices.Contains(m.byNode[node], addr)
}

// update sets the addresses of members. Members no longer listed go; a
// member whose name does not resolve now keeps what it resolved to
// before (a DNS hiccup must not throttle the cluster's own traffic).
func (m *memberAddrs) update(ctx context.Context, members []cluster.Member) {
	found := make([][]netip.Addr, len(members))
	var wg sync.WaitGroup
	for i, mem := range members {
		host, _, err := net.SplitHostPort(mem.Addr)
		if err != nil {
			host = mem.Addr
		}
		if a, err := netip.ParseAddr(host); err == nil {
			found[i] = []netip.Addr{a.Unmap().WithZone("")}
			continue
		}
		if host == "" {
			continue
		}
		wg.Go(func() {
			lctx, cancel := context.WithTimeout(ctx, memberLookupTimeout)
			defer cancel()
			addrs, err := m.lookup(lctx, host)
			if err != nil {
				return
			}
			for _, a := range addrs {
				found[i] = append(found[i], a.Unmap().WithZone(""))
			}
		})
	}
	wg.Wait()
	m.mu.Lock()
	defer m.mu.Unlock()
	next := make(map[string][]netip.Addr, len(members))
	for i, mem := range members {
		if found[i] == nil {
			found[i] = m.byNode[mem.Name]
		}
		next[mem.Name] = found[i]
	}
	m.byNode = next
}

// runMemberAddrs keeps m fresh: at once, on every membership change and
// every interval (a member's name may come to name another address: a
// pod rescheduled), until ctx ends.
func runMemberAddrs(ctx context.Context, m *memberAddrs, members func() []cluster.Member, every time.Duration, changed func() <-chan struct{}) error {
	if every <= 0 {
		every = clusterapi.DefaultOriginsRefresh
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		change := changed()
		m.update(ctx, members())
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-change:
		}
	}
}
