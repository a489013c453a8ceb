package clusterapi

import (
	"context"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"
)

// Origins are the web origins of the cluster's members (each node's
// public HTTP and WebSocket URLs reduced to scheme://host[:port]), kept
// fresh by RunOrigins. A page one node served may reach the others
// directly when its node goes away (no load balancer in front): their
// API answers its CORS requests, their WebSocket listener accepts its
// Origin, and its Content-Security-Policy lets it connect to them.
//
// A member that stops answering keeps its last known origins until it
// leaves the configuration: a page must still be allowed back to a node
// that restarts.
type Origins struct {
	mu     sync.RWMutex
	byNode map[string][]string // member name → its origins (http first)
	http   []string            // every member's HTTP origin, sorted
	all    map[string]bool
}

// DefaultOriginsRefresh is how often RunOrigins asks the members.
const DefaultOriginsRefresh = 10 * time.Second

// NewOrigins is an empty set: nothing is allowed until the first refresh.
func NewOrigins() *Origins { return &Origins{byNode: map[string][]string{}, all: map[string]bool{}} }

// Allowed tells whether origin (as a browser sends it) is a member's.
func (o *Origins) Allowed(origin string) bool {
	if o == nil {
		return false
	}
	norm, ok := webOrigin(origin)
	if !ok {
		return false
	}
	o.mu.RLock()
	defer o.mu.RUnlock()
	return o.all[norm]
}

// HTTP lists the members' HTTP origins (sorted).
func (o *Origins) HTTP() []string {
	o.mu.RLock()
	defer o.mu.RUnlock()
	return slices.Clone(o.http)
}

// Sources lists every member origin, HTTP and WebSocket (sorted), for a
// Content-Security-Policy's connect-src.
func (o *Origins) Sources() []string {
	o.mu.RLock()
	defer o.mu.RUnlock()
	out := make([]string, 0, len(o.all))
	for s := range o.all {
		out = append(out, s)
	}
	slices.Sort(out)
	return out
}

// update records what the members said; members no longer listed go,
// members that did not answer (no URLs) keep what they said before.
func (o *Origins) update(nodes []NodeView) {
	o.mu.Lock()
	defer o.mu.Unlock()
	next := make(map[string][]string, len(nodes))
	for _, n := range nodes {
		var list []string
		for _, u := range []string{n.HTTP, n.WS} {
			if s, ok := webOrigin(u); ok {
				list = append(list, s)
			}
		}
		if len(list) == 0 {
			list = o.byNode[n.Name]
		}
		next[n.Name] = list
	}
	o.byNode = next
	o.all = map[string]bool{}
	o.http = o.http[:0]
	for _, list := range next {
		for _, s := range list {
			o.all[s] = true
			if strings.HasPrefix(s, "http") {
				o.http = append(o.http, s)
			}
		}
	}
	slices.Sort(o.http)
	o.http = slices.Compact(o.http)
}

// webOrigin reduces a URL to its lowercase scheme://host[:port] for the
// schemes a page uses; ok is false for anything else, and for strings
// that could break out of a header or an attribute.
func webOrigin(s string) (string, bool) {
	if s == "" || strings.ContainsAny(s, " \t\r\n;,'\"<>\\") {
		return "", false
	}
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || u.User != nil {
		return "", false
	}
	switch scheme := strings.ToLower(u.Scheme); scheme {
	case "http", "https", "ws", "wss":
		return scheme + "://" + strings.ToLower(u.Host), true
	}
	return "", false
}

// RunOrigins refreshes o from the members every interval, at once, and
// whenever changed (nil: never) says the membership changed, until ctx
// ends.
func (s *Service) RunOrigins(ctx context.Context, o *Origins, every time.Duration, changed func() <-chan struct{}) error {
	if every <= 0 {
		every = DefaultOriginsRefresh
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		var change <-chan struct{}
		if changed != nil {
			change = changed()
		}
		o.update(s.Nodes(ctx))
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-change:
		}
	}
}
