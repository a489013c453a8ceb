package main

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
)

// `edgechat cluster remove NODE` removes the member named NODE, whatever
// characters a node ID may hold (only '/', spaces and tabs are refused):
// the name was put into the URL unescaped, so "edge#2" asked the node to
// remove "edge" (the rest read as a fragment) and "n1?old" to remove
// "n1", another, live member.
func TestClusterRemoveSendsTheWholeNodeName(t *testing.T) {
	data := dataDirWithSigningKey(t)
	var mu sync.Mutex
	var removed []string
	mux := http.NewServeMux()
	mux.HandleFunc("DELETE /cluster/nodes/{name}", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		removed = append(removed, r.PathValue("name"))
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	for _, name := range []string{"edge#2", "n1?old", "n%41", "plain-1"} {
		mu.Lock()
		removed = nil
		mu.Unlock()
		if err := clusterCmd(context.Background(), []string{"remove", name, "--server", srv.URL, "--data", data}, io.Discard); err != nil {
			t.Fatalf("cluster remove %s: %v", name, err)
		}
		mu.Lock()
		got := removed
		mu.Unlock()
		if len(got) != 1 || got[0] != name {
			t.Errorf("cluster remove %q asked the node to remove %q", name, got)
		}
	}
}
