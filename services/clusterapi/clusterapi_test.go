package clusterapi

import (
	"context"
	"encoding/json"
	"errors"
	"github.com/edgechat/edgechat/cluster"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/edgechat/edgechat/internal/wire"
)

func newSvc(t *testing.T, peers map[string]NodeInfo, down map[string]bool) *Service {
	t.Helper()
	s, err := New(Deps{
		Status: func() Status {
			return Status{Node: "n1", Members: []cluster.Member{{Name: "n1", Addr: "a1"}, {Name: "n2", Addr: "a2"}, {Name: "n3", Addr: "a3"}}}
		},
		Self: func() NodeInfo { return NodeInfo{Name: "n1", MQTT: "tcp://n1", Connections: 50, Ready: true} },
		PeerInfo: func(_ context.Context, m cluster.Member) (NodeInfo, error) {
			if down[m.Name] {
				return NodeInfo{}, errors.New("unreachable")
			}
			return peers[m.Name], nil
		},
		Leave:  func(context.Context) error { return nil },
		Remove: func(_ context.Context, name string) error { return wire.ErrNotFound },
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func get(s *Service, pattern string) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	for _, r := range s.Routes() {
		if r.Pattern == pattern && r.Method == "GET" {
			r.Handler(rec, httptest.NewRequest("GET", pattern, nil))
		}
	}
	return rec
}

func TestConnectPicksTheLeastLoadedHealthyNode(t *testing.T) {
	peers := map[string]NodeInfo{
		"n2": {Name: "n2", MQTT: "tcp://n2", Connections: 10, Ready: true},
		"n3": {Name: "n3", MQTT: "tcp://n3", Connections: 1, Ready: true},
	}
	// n3 is the least loaded but unreachable: n2 wins.
	rec := get(newSvc(t, peers, map[string]bool{"n3": true}), "/cluster/connect")
	var out struct{ Node string }
	_ = json.Unmarshal(rec.Body.Bytes(), &out)
	if rec.Code != 200 || out.Node != "n2" {
		t.Fatalf("connect: %d %s", rec.Code, rec.Body)
	}
	// With n3 back it wins.
	rec = get(newSvc(t, peers, nil), "/cluster/connect")
	_ = json.Unmarshal(rec.Body.Bytes(), &out)
	if out.Node != "n3" {
		t.Fatalf("connect with n3 up: %s", rec.Body)
	}
	// Not ready counts as unhealthy; nobody healthy but self-not-ready → 503.
	notReady := map[string]NodeInfo{"n2": {Name: "n2", MQTT: "x", Ready: false}, "n3": {Name: "n3", MQTT: "y", Ready: false}}
	s := newSvc(t, notReady, nil)
	s.deps.Self = func() NodeInfo { return NodeInfo{Name: "n1", MQTT: "tcp://n1"} }
	if rec := get(s, "/cluster/connect"); rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" {
		t.Fatalf("no healthy node: %d %v", rec.Code, rec.Header())
	}
}

func TestNodesMarksUnreachableMembers(t *testing.T) {
	rec := get(newSvc(t, map[string]NodeInfo{"n2": {Name: "n2", Ready: true}}, map[string]bool{"n3": true}), "/cluster/nodes")
	var out struct {
		Nodes []NodeView `json:"nodes"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || len(out.Nodes) != 3 {
		t.Fatalf("nodes: %s %v", rec.Body, err)
	}
	healthy := map[string]bool{}
	for _, n := range out.Nodes {
		healthy[n.Name] = n.Healthy
	}
	if !healthy["n1"] || !healthy["n2"] || healthy["n3"] {
		t.Fatalf("health %v", healthy)
	}
}

func TestRemoveUnknownIs404(t *testing.T) {
	s := newSvc(t, nil, nil)
	for _, r := range s.Routes() {
		if r.Method == "DELETE" {
			req := httptest.NewRequest("DELETE", "/cluster/nodes/zz", nil)
			req.SetPathValue("name", "zz")
			rec := httptest.NewRecorder()
			r.Handler(rec, req)
			if rec.Code != 404 {
				t.Fatalf("remove unknown: %d", rec.Code)
			}
			if !r.Admin {
				t.Fatal("remove must be an admin route")
			}
			return
		}
	}
	t.Fatal("no DELETE route")
}

// Node names up to cluster.MaxNodeName bytes reach Remove (a member may
// have one); longer ones are refused. Before: names over 64 bytes got 400.
func TestRemoveTakesNamesUpToTheClusterLimit(t *testing.T) {
	s := newSvc(t, nil, nil)
	for _, r := range s.Routes() {
		if r.Method != "DELETE" {
			continue
		}
		for name, want := range map[string]int{
			strings.Repeat("n", cluster.MaxNodeName):   404, // the fake Remove knows no member
			strings.Repeat("n", cluster.MaxNodeName+1): 400,
		} {
			req := httptest.NewRequest("DELETE", "/cluster/nodes/x", nil)
			req.SetPathValue("name", name)
			rec := httptest.NewRecorder()
			r.Handler(rec, req)
			if rec.Code != want {
				t.Errorf("remove of a %d-byte name: %d, want %d", len(name), rec.Code, want)
			}
		}
		return
	}
	t.Fatal("no DELETE route")
}

// A node bound to every interface without --advertise-* must not hand a
// client [::] or 0.0.0.0 (which dials the client's own machine): the
// answering node gives the address the request came to, the others the
// host of their cluster address.
func TestConnectGivesReachableHostsForWildcardBinds(t *testing.T) {
	s, err := New(Deps{
		Status: func() Status {
			return Status{Node: "n1", Members: []cluster.Member{{Name: "n1", Addr: "192.0.2.1:7946"}, {Name: "n2", Addr: "192.0.2.2:7946"}}}
		},
		Self: func() NodeInfo {
			return NodeInfo{Name: "n1", MQTT: "tcp://[::]:1883", WS: "ws://0.0.0.0:8080/mqtt", HTTP: "http://[::]:8080", Connections: 1, Ready: true}
		},
		PeerInfo: func(context.Context, cluster.Member) (NodeInfo, error) {
			return NodeInfo{Name: "n2", MQTT: "tls://chat.example.com:8883", WS: "wss://[::]:8443/mqtt", HTTP: "https://[::]:8443", Connections: 5, Ready: true}, nil
		},
		Leave:  func(context.Context) error { return nil },
		Remove: func(context.Context, string) error { return nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	for _, r := range s.Routes() {
		if r.Method == "GET" {
			mux.HandleFunc(r.Pattern, r.Handler)
		}
	}
	srv := httptest.NewServer(mux) // 127.0.0.1: the address the request comes to
	defer srv.Close()
	getJSON := func(path string, out any) {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET %s: %d %v", path, resp.StatusCode, err)
		}
	}
	var conn struct{ Node, MQTT, WS, HTTP string }
	getJSON("/cluster/connect", &conn)
	if conn.Node != "n1" || conn.MQTT != "tcp://127.0.0.1:1883" || conn.WS != "ws://127.0.0.1:8080/mqtt" || conn.HTTP != "http://127.0.0.1:8080" {
		t.Fatalf("connect: %+v, want n1's URLs at 127.0.0.1", conn)
	}
	var nodes struct{ Nodes []NodeView }
	getJSON("/cluster/nodes", &nodes)
	if len(nodes.Nodes) != 2 {
		t.Fatalf("nodes: %+v", nodes)
	}
	n2 := nodes.Nodes[1]
	if n2.MQTT != "tls://chat.example.com:8883" || n2.WS != "wss://192.0.2.2:8443/mqtt" || n2.HTTP != "https://192.0.2.2:8443" {
		t.Fatalf("n2: %+v, want its cluster host in place of [::] and its advertised MQTT URL kept", n2)
	}
	// Without a request (the origins refresh) the node's own cluster host.
	if self := s.Nodes(context.Background())[0]; self.MQTT != "tcp://192.0.2.1:1883" {
		t.Fatalf("self without a request: %+v", self)
	}
}
