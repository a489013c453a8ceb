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

// An operator command given an argument it does not take is refused
// (exit 2, usage) before it does anything. Flag parsing stops at the first
// argument that is no flag, so `edgechat cluster leave n3 --server
// http://n3:8080` read no --server and made the node at
// $EDGECHAT_SERVER (or 127.0.0.1:8080: the node the operator is logged
// into) leave the cluster instead of n3; `user suspend mallory lift`
// suspended mallory, `user grant alice admin revoke` made alice an admin.
func TestOperatorCommandsRefuseArgumentsTheyDoNotTake(t *testing.T) {
	data := dataDirWithSigningKey(t)
	var mu sync.Mutex
	var calls []string
	record := func(who string) *httptest.Server {
		return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			calls = append(calls, who+": "+r.Method+" "+r.URL.Path)
			mu.Unlock()
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{}`)
		}))
	}
	named, local := record("--server"), record("the local node")
	defer named.Close()
	defer local.Close()
	t.Setenv("EDGECHAT_SERVER", local.URL)
	t.Setenv("EDGECHAT_DATA", data)
	for _, args := range [][]string{
		{"cluster", "leave", "n3", "--server", named.URL},
		{"cluster", "status", "n3", "--server", named.URL},
		{"cluster", "remove", "n3", "n4", "--server", named.URL},
		{"user", "suspend", "mallory", "lift", "--server", named.URL},
		{"user", "grant", "alice", "admin", "revoke", "--server", named.URL},
		{"user", "list", "suspended", "--server", named.URL},
		{"keys", "rotate", "n2", "--server", named.URL},
		{"keys", "revoke", "k1", "k2", "--server", named.URL},
	} {
		mu.Lock()
		calls = nil
		mu.Unlock()
		var stderr strings.Builder
		code := run(context.Background(), args, strings.NewReader(""), io.Discard, &stderr)
		mu.Lock()
		got := calls
		mu.Unlock()
		if code != 2 || len(got) > 0 {
			t.Errorf("edgechat %s: exit %d, requests %q; want exit 2 (usage) and no request\n%s",
				strings.Join(args, " "), code, got, stderr.String())
		}
	}
}
