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

// `edgechat COMMAND --help` prints that command's usage and flags and
// exits 0, sending nothing. Before, every command but serve answered
// 'edgechat: usage: flag: help requested' and the general usage with
// exit 2 (the flags were never printed anywhere: --device and --oidc of
// chat, --ttl of token, --timeout of health, the --s3-* of backup), and
// `edgechat keys revoke --help` asked the node to revoke a key named
// "--help".
func TestEveryCommandsHelpListsItsFlags(t *testing.T) {
	var mu sync.Mutex
	var calls []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		calls = append(calls, r.Method+" "+r.URL.Path)
		mu.Unlock()
		_, _ = io.WriteString(w, `{}`)
	}))
	defer srv.Close()
	t.Setenv("EDGECHAT_SERVER", srv.URL)
	t.Setenv("EDGECHAT_DATA", dataDirWithSigningKey(t))
	// Secrets in the environment are flags' defaults: the help must
	// not print them.
	secrets := []string{"eyJsecret.token.value", "s3-secret-value", "s3-access-value"}
	t.Setenv("EDGECHAT_TOKEN", secrets[0])
	t.Setenv("EDGECHAT_S3_SECRET_KEY", secrets[1])
	t.Setenv("EDGECHAT_S3_ACCESS_KEY", secrets[2])
	for _, tc := range []struct {
		args []string
		want []string // in the help
	}{
		{[]string{"chat", "--help"}, []string{"edgechat chat", "-device", "-oidc", "-token"}},
		{[]string{"token", "--help"}, []string{"edgechat token", "-ttl", "-data"}},
		{[]string{"token", "bob", "-h"}, []string{"-ttl"}},
		{[]string{"health", "--help"}, []string{"-timeout", "-url"}},
		{[]string{"backup", "--help"}, []string{"-to", "-s3-endpoint", "-token"}},
		{[]string{"restore", "--help"}, []string{"-from", "-adopt-archive-store"}},
		{[]string{"user", "add", "--help"}, []string{"edgechat user add", "-display-name", "-password-stdin"}},
		{[]string{"user", "grant", "--help"}, []string{"-revoke"}},
		{[]string{"user", "suspend", "--help"}, []string{"-lift"}},
		{[]string{"user", "delete", "bob", "--help"}, []string{"-yes"}},
		{[]string{"user", "list", "--help"}, []string{"-suspended"}},
		{[]string{"user", "passwd", "--help"}, []string{"-password-stdin"}},
		{[]string{"keys", "revoke", "--help"}, []string{"edgechat keys", "-server"}},
		{[]string{"keys", "list", "--help"}, []string{"-data"}},
		{[]string{"cluster", "remove", "--help"}, []string{"edgechat cluster", "-server"}},
		{[]string{"cluster", "status", "--help"}, []string{"-data"}},
		{[]string{"push", "test", "--help"}, []string{"edgechat push test", "-data"}},
		{[]string{"archive", "status", "--help"}, []string{"-data"}},
		{[]string{"link", "status", "--help"}, []string{"-token"}},
	} {
		mu.Lock()
		calls = nil
		mu.Unlock()
		var stdout, stderr strings.Builder
		code := run(context.Background(), tc.args, strings.NewReader(""), &stdout, &stderr)
		mu.Lock()
		got := calls
		mu.Unlock()
		name := "edgechat " + strings.Join(tc.args, " ")
		if code != 0 || len(got) > 0 || stderr.Len() > 0 {
			t.Errorf("%s: exit %d, requests %q, stderr %q; want exit 0, no request, nothing on stderr", name, code, got, firstLine(stderr.String()))
			continue
		}
		for _, secret := range secrets {
			if strings.Contains(stdout.String(), secret) {
				t.Errorf("%s: the help prints a secret of the environment (%q):\n%s", name, secret, stdout.String())
			}
		}
		for _, w := range tc.want {
			if !strings.Contains(stdout.String(), w) {
				t.Errorf("%s: the help does not mention %q:\n%s", name, w, stdout.String())
			}
		}
	}
}

func firstLine(s string) string {
	first, _, _ := strings.Cut(s, "\n")
	return first
}
