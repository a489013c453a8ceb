package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/edgechat/edgechat/services/auth"
)

// `edgechat cluster remove NODE` removes the member named NODE, whatever
// characters a node ID may hold (only '/', spaces and tabs are refused):
// the name was put into the URL unescaped, so "edge#2" asked the node to
// remove "edge" (the rest read as a fragment) and "n1?old" to remove
// "n1", another, live member.
func TestClusterRemoveSendsTheWholeNodeName(t *testing.T) {
	data := t.TempDir()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(data, "keys"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, "keys", auth.SigningKeyFile), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
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
