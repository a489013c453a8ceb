// Package clusterapi serves /cluster: the members of the cluster with
// their load, the least loaded node for a client to connect to (the
// registry role of the original design), and the admin operations on
// membership (status, leave, remove).
package clusterapi

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"sort"
	"sync"
	"time"

	"github.com/edgechat/edgechat/cluster"
	"github.com/edgechat/edgechat/internal/httpapi"
	"github.com/edgechat/edgechat/internal/wire"
)

// NodeInfo is what a node says about itself.
type NodeInfo struct {
	Name        string `json:"name"`
	MQTT        string `json:"mqtt,omitempty"`
	WS          string `json:"ws,omitempty"`
	HTTP        string `json:"http,omitempty"`
	Connections int    `json:"connections"`
	Ready       bool   `json:"ready"`
	// PeerHTTP is, for the other members' own requests (a media read
	// through a node that does not hold the file, a segment copy), the
	// HTTP API's address as the node listens on it (http://HOST:PORT;
	// HOST may be unspecified, [::] or 0.0.0.0): HTTP is the public URL,
	// which the members may not reach (localhost behind a container's
	// published port, 127.0.0.1 for a node bound to every interface). ""
	// from a node that serves HTTPS and advertises its public URL (its
	// certificate names that URL's host), and from one of an earlier
	// version: the members use HTTP. Not shown to clients.
	PeerHTTP string `json:"-"`
	// FeatureLevel is the highest cluster feature level the node's
	// version supports (cluster/featurelevel); 0 from a node of an
	// earlier version, which sends none. The leader raises the cluster's
	// level to the lowest of its members'. Not shown to clients.
	FeatureLevel uint32 `json:"-"`
	// ArchiveStore is where the node keeps sealed message segments
	// ("local", "s3 bucket NAME"); "" from a node of an earlier version.
	// The leader seals only while every member that says agrees with it.
	// Not shown to clients.
	ArchiveStore string `json:"-"`
}

// Status is the answer of GET /cluster/status.
type Status struct {
	Node         string           `json:"node"`
	State        string           `json:"state"`
	Leader       string           `json:"leader"`
	Term         uint64           `json:"term"`
	LastIndex    uint64           `json:"lastIndex"`
	CommitIndex  uint64           `json:"commitIndex"`
	AppliedIndex uint64           `json:"appliedIndex"`
	Members      []cluster.Member `json:"members"`
	// FeatureLevel is the cluster's feature level as this node applied
	// it (cluster/featurelevel): 0 until every member runs a version that
	// supports level 1.
	FeatureLevel uint32 `json:"featureLevel"`
}

// Deps is what the service needs from the node.
type Deps struct {
	Status   func() Status
	Self     func() NodeInfo
	PeerInfo func(ctx context.Context, m cluster.Member) (NodeInfo, error) // asks another member about itself
	Leave    func(ctx context.Context) error
	Remove   func(ctx context.Context, name string) error
	// InfoTimeout bounds the question to each peer; default 1s.
	InfoTimeout time.Duration
}

// ErrMissingDep is returned by New when a dependency is nil.
var ErrMissingDep = errors.New("clusterapi: missing dependency")

// Service serves /cluster.
type Service struct{ deps Deps }

// New builds the service.
func New(deps Deps) (*Service, error) {
	if deps.Status == nil || deps.Self == nil || deps.PeerInfo == nil || deps.Leave == nil || deps.Remove == nil {
		return nil, ErrMissingDep
	}
	if deps.InfoTimeout <= 0 {
		deps.InfoTimeout = time.Second
	}
	return &Service{deps: deps}, nil
}

// Routes of the service.
func (s *Service) Routes() []httpapi.Route {
	return []httpapi.Route{
		{Method: http.MethodGet, Pattern: "/cluster/nodes", Handler: s.handleNodes, Class: httpapi.ClassRead},
		{Method: http.MethodGet, Pattern: "/cluster/connect", Handler: s.handleConnect, Class: httpapi.ClassRead},
		{Method: http.MethodGet, Pattern: "/cluster/status", Handler: s.handleStatus, Admin: true, Class: httpapi.ClassAdmin},
		{Method: http.MethodPost, Pattern: "/cluster/leave", Handler: s.handleLeave, Admin: true, Class: httpapi.ClassAdmin},
		{Method: http.MethodDelete, Pattern: "/cluster/nodes/{name}", Handler: s.handleRemove, Admin: true, Class: httpapi.ClassAdmin},
	}
}

// NodeView is one entry of GET /cluster/nodes.
type NodeView struct {
	NodeInfo
	ClusterAddr string `json:"clusterAddr"`
	Leader      bool   `json:"leader"`
	Voter       bool   `json:"voter"`
	Healthy     bool   `json:"healthy"` // answered and ready
}

// Nodes asks every member about itself, in parallel, each within
// InfoTimeout. A member that does not answer is listed as unhealthy. A
// URL made from a bind to every interface (host [::] or 0.0.0.0, which
// no client can dial) gets the host of the member's cluster address.
func (s *Service) Nodes(ctx context.Context) []NodeView { return s.nodes(ctx, "") }

// nodes is Nodes; selfHost, when not "", is the host this node's own
// unspecified hosts get instead (the address a request came to).
func (s *Service) nodes(ctx context.Context, selfHost string) []NodeView {
	st := s.deps.Status()
	self := s.deps.Self()
	views := make([]NodeView, len(st.Members))
	var wg sync.WaitGroup
	for i, m := range st.Members {
		views[i] = NodeView{NodeInfo: NodeInfo{Name: m.Name}, ClusterAddr: m.Addr, Leader: m.Leader, Voter: m.Suffrage == "Voter"}
		if m.Name == st.Node {
			views[i].NodeInfo = self
			views[i].Healthy = self.Ready
			continue
		}
		wg.Add(1)
		go func(i int, m cluster.Member) {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, s.deps.InfoTimeout)
			defer cancel()
			info, err := s.deps.PeerInfo(cctx, m)
			if err != nil {
				return
			}
			views[i].NodeInfo = info
			views[i].Name = m.Name
			views[i].Healthy = info.Ready
		}(i, m)
	}
	wg.Wait()
	for i, m := range st.Members {
		host := selfHost
		if m.Name != st.Node || host == "" {
			host, _, _ = net.SplitHostPort(m.Addr)
		}
		views[i].reachable(host)
	}
	sort.Slice(views, func(a, b int) bool { return views[a].Name < views[b].Name })
	return views
}

// reachable puts host in place of an unspecified host in the public URLs.
func (v *NodeView) reachable(host string) {
	if host == "" {
		return
	}
	for _, u := range []*string{&v.MQTT, &v.WS, &v.HTTP} {
		*u = withHost(*u, host)
	}
}

// withHost is rawURL with host in place of an unspecified one.
func withHost(rawURL, host string) string {
	u, err := url.Parse(rawURL)
	if rawURL == "" || err != nil {
		return rawURL
	}
	h, port, err := net.SplitHostPort(u.Host)
	if err != nil {
		return rawURL
	}
	if ip, err := netip.ParseAddr(h); err != nil || !ip.IsUnspecified() {
		return rawURL
	}
	u.Host = net.JoinHostPort(host, port)
	return u.String()
}

// requestHost is the address a request came to (the IP of this node's
// interface the client reached), "" when unknown.
func requestHost(r *http.Request) string {
	a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	if !ok {
		return ""
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil || ap.Addr().IsUnspecified() {
		return ""
	}
	return ap.Addr().Unmap().WithZone("").String()
}

func (s *Service) handleNodes(w http.ResponseWriter, r *http.Request) {
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"nodes": s.nodes(r.Context(), requestHost(r))})
}

// handleConnect answers with the least loaded healthy node that has
// public URLs (ties broken by name, so the answer is stable).
func (s *Service) handleConnect(w http.ResponseWriter, r *http.Request) {
	var best *NodeView
	nodes := s.nodes(r.Context(), requestHost(r))
	for i := range nodes {
		n := &nodes[i]
		if !n.Healthy || (n.MQTT == "" && n.WS == "") {
			continue
		}
		if best == nil || n.Connections < best.Connections {
			best = n
		}
	}
	if best == nil {
		httpapi.WriteError(w, &httpapi.Error{Status: http.StatusServiceUnavailable, Code: httpapi.CodeUnavailable,
			Message: "no healthy node", RetryAfter: time.Second})
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"node": best.Name, "mqtt": best.MQTT, "ws": best.WS,
		"http": best.HTTP, "connections": best.Connections})
}

func (s *Service) handleStatus(w http.ResponseWriter, r *http.Request) {
	httpapi.WriteJSON(w, http.StatusOK, s.deps.Status())
}

func (s *Service) handleLeave(w http.ResponseWriter, r *http.Request) {
	if err := s.deps.Leave(r.Context()); err != nil {
		writeErr(w, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"left": s.deps.Status().Node})
}

func (s *Service) handleRemove(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if name == "" || len(name) > cluster.MaxNodeName {
		httpapi.WriteError(w, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeValidation, "invalid node name"))
		return
	}
	if err := s.deps.Remove(r.Context(), name); err != nil {
		writeErr(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func writeErr(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, wire.ErrNotFound):
		httpapi.WriteError(w, httpapi.Errorf(http.StatusNotFound, httpapi.CodeNotFound, "%v", err))
	case errors.Is(err, wire.ErrInvalid):
		httpapi.WriteError(w, httpapi.Errorf(http.StatusConflict, httpapi.CodeConflict, "%v", err))
	case errors.Is(err, wire.ErrUnavailable):
		httpapi.WriteError(w, &httpapi.Error{Status: http.StatusServiceUnavailable, Code: httpapi.CodeUnavailable,
			Message: err.Error(), RetryAfter: time.Second})
	default:
		httpapi.WriteError(w, err)
	}
}
