package region

import (
	"strings"

	"github.com/edgechat/edgechat/internal/address"
	"github.com/edgechat/edgechat/internal/wire"
)

// Routes is the cluster's replicated table of subscriptions
// (*routes.Table): which node has a client subscribed to which filter.
// It is this region's interest in the users of other regions, like a
// route table between nodes: a subscription to presence/bob@us on any
// node is an interest of the region in bob of us.
type Routes interface {
	Nodes() []string
	Filters(node string) []string
	OnChange(fn func(node, filter string))
}

// interest is the set of users of region link (unqualified names) whose
// presence a client of this region subscribes to.
func (b *Bridge) interest(link string) map[string]bool {
	want := map[string]bool{}
	if b.deps.Routes == nil {
		return want
	}
	for _, node := range b.deps.Routes.Nodes() {
		for _, f := range b.deps.Routes.Filters(node) {
			if name, ok := presenceInterest(f, link); ok {
				want[name] = true
			}
		}
	}
	return want
}

// presenceInterest reads a route filter: presence/{name}@{link} is an
// interest in name of link.
func presenceInterest(filter, link string) (string, bool) {
	rest, ok := strings.CutPrefix(filter, "presence/")
	if !ok || strings.IndexByte(rest, '@') < 0 {
		return "", false
	}
	a, err := address.Parse(rest)
	if err != nil || a.Region != link || wire.ValidUserID(a.Name) != nil {
		return "", false
	}
	return a.Name, true
}

// routeChanged wakes the links whose interest may have changed (the
// route table's OnChange: on the FSM's goroutine, must not block).
func (b *Bridge) routeChanged(_, filter string) {
	if filter != "" && !strings.HasPrefix(filter, "presence/") {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, e := range b.eph {
		e.wake()
	}
}
