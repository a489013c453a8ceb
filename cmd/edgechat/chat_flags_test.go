//go:build !nochat

package main

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// `edgechat chat --oidc PROVIDER --token T` is refused as the usage error
// it is (two ways to sign in): the token was ignored without a word and
// the provider's device flow began.
func TestChatRefusesTwoWaysToSignIn(t *testing.T) {
	var mu sync.Mutex
	var calls []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		calls = append(calls, r.Method+" "+r.URL.Path)
		mu.Unlock()
		http.Error(w, "no", http.StatusNotFound)
	}))
	defer srv.Close()
	t.Setenv("HOME", t.TempDir())
	t.Setenv("XDG_CONFIG_HOME", "")
	var stderr strings.Builder
	code := run(context.Background(), []string{"chat", "--server", srv.URL, "--oidc", "corp", "--token", "eyJx.y.z"}, strings.NewReader(""), io.Discard, &stderr)
	mu.Lock()
	defer mu.Unlock()
	if code != 2 || len(calls) > 0 || !strings.Contains(stderr.String(), "--oidc") {
		t.Fatalf("chat --oidc corp --token T: exit %d, requests %q, stderr %q; want exit 2, nothing asked, a word on --oidc and --token", code, calls, firstLine(stderr.String()))
	}
}
