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
