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

// The operator commands that name an account refuse a name that is no
// user name before sending anything: the name went into the request's
// path as it was, and the node routes the cleaned path, so `edgechat
// user suspend 'nobody/../bob'` suspended bob (and said 'nobody/../bob
// is suspended'); `user delete 'x/../alice' --yes` would have deleted
// alice. A key ID is sent escaped.
func TestAccountCommandsRefuseANameThatIsNoUserName(t *testing.T) {
	var mu sync.Mutex
	var calls []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		calls = append(calls, r.Method+" "+r.URL.EscapedPath())
		mu.Unlock()
		_, _ = io.WriteString(w, `{"userId":"bob"}`)
	}))
	defer srv.Close()
	t.Setenv("EDGECHAT_SERVER", srv.URL)
	t.Setenv("EDGECHAT_DATA", dataDirWithSigningKey(t))
	for _, args := range [][]string{
		{"user", "suspend", "nobody/../bob"},
		{"user", "suspend", "nobody/../bob", "--lift"},
		{"user", "grant", "x/../alice", "admin"},
		{"user", "delete", "x/../alice", "--yes"},
		{"user", "passwd", "x/../alice", "--password-stdin"},
		{"user", "delete", "bob?x=1", "--yes"},
		{"token", "x/../alice"},
		{"push", "test", "x/../alice"},
	} {
		mu.Lock()
		calls = nil
		mu.Unlock()
		var stderr strings.Builder
		code := run(context.Background(), args, strings.NewReader("new-password\n"), io.Discard, &stderr)
		mu.Lock()
		got := calls
		mu.Unlock()
		name := "edgechat " + strings.Join(args, " ")
		if code != 2 || len(got) > 0 || !strings.Contains(stderr.String(), "not a user name") {
			t.Errorf("%s: exit %d, requests %q, stderr %q; want exit 2, no request, 'not a user name'", name, code, got, firstLine(stderr.String()))
		}
	}

	mu.Lock()
	calls = nil
	mu.Unlock()
	if code := run(context.Background(), []string{"keys", "revoke", "k/../../../cluster/leave"}, strings.NewReader(""), io.Discard, io.Discard); code != 0 {
		t.Errorf("keys revoke: exit %d", code)
	}
	mu.Lock()
	defer mu.Unlock()
	if want := "POST /admin/keys/k%2F..%2F..%2F..%2Fcluster%2Fleave/revoke"; len(calls) != 1 || calls[0] != want {
		t.Errorf("keys revoke of a key ID with slashes sent %q, want %q", calls, want)
	}
}

// `edgechat token NAME --ttl D` refuses a lifetime that is not
// positive: --ttl -5m printed a token that had expired five minutes
// before (exit 0: a script took it and every request with it got 401),
// and --ttl 0 one of the node's default 15 minutes rather than none.
func TestTokenRefusesALifetimeThatIsNotPositive(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, `{"userId":"bob"}`)
	}))
	defer srv.Close()
	data := dataDirWithSigningKey(t)
	for _, ttl := range []string{"-5m", "0", "0s"} {
		var stdout, stderr strings.Builder
		code := run(context.Background(), []string{"token", "bob", "--ttl", ttl, "--server", srv.URL, "--data", data}, strings.NewReader(""), &stdout, &stderr)
		if code != 2 || stdout.Len() > 0 || !strings.Contains(stderr.String(), "--ttl") {
			t.Errorf("token bob --ttl %s: exit %d, printed %q, stderr %q; want exit 2, no token, a word on --ttl", ttl, code, firstLine(stdout.String()), firstLine(stderr.String()))
		}
	}
	var stdout strings.Builder
	if code := run(context.Background(), []string{"token", "bob", "--ttl", "2m", "--server", srv.URL, "--data", data}, strings.NewReader(""), &stdout, io.Discard); code != 0 || strings.Count(stdout.String(), ".") != 2 {
		t.Errorf("token bob --ttl 2m: exit %d, printed %q, want a token", code, stdout.String())
	}
}
