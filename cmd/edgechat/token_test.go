package main

import (
	"encoding/base64"
	"encoding/json"
	"maps"
	"net/http"
	"slices"
	"strings"
	"testing"
)

// jwtClaims decodes the claims of a JWT without verifying it (the node
// verifies; this compares what two tokens say).
func jwtClaims(t *testing.T, tok string) map[string]any {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %q", tok)
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

// `edgechat token NAME` for an admin mints a token that admin routes
// accept, with the claims of NAME's login token; for a plain user one
// that they refuse, again like the login token.
func TestTokenCommandMintsLoginClaims(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs a real process")
	}
	bin := edgechatBinary(t)
	data := t.TempDir()
	p := startServe(t, bin, "--data", data, "--http-addr", "127.0.0.1:0", "--mqtt-addr", "127.0.0.1:0",
		"--cluster-addr", "127.0.0.1:0", "--access-token-ttl", "20m")
	for _, u := range []string{"alice", "bob"} { // alice, the first account, is an admin
		runCLI(t, bin, "a long password\n", "user", "add", u, "--password-stdin", "--server", p.http)
	}
	pprof := func(tok string) int {
		t.Helper()
		code, _ := httpJSON("GET", p.http+"/debug/pprof/", tok, nil, nil)
		return code
	}
	for _, u := range []struct {
		name string
		want int
	}{{"alice", http.StatusOK}, {"bob", http.StatusForbidden}} {
		cli := runCLI(t, bin, "", "token", u.name, "--data", data, "--server", p.http, "--ttl", "20m")
		var login struct{ AccessToken string }
		if _, err := httpJSON("POST", p.http+"/auth/login", "", map[string]string{"username": u.name, "password": "a long password"}, &login); err != nil {
			t.Fatal(err)
		}
		if got, want := pprof(cli), pprof(login.AccessToken); got != u.want || want != u.want {
			t.Errorf("%s: /debug/pprof/ answers %d to the CLI token, %d to the login token; want %d", u.name, got, want, u.want)
		}
		c, l := jwtClaims(t, cli), jwtClaims(t, login.AccessToken)
		// A login's token belongs to its session (sid); a minted one to none.
		if l["sid"] == nil || c["sid"] != nil {
			t.Errorf("%s: sid %v in the login token, %v in the CLI token; want one only in the login token", u.name, l["sid"], c["sid"])
		}
		delete(l, "sid")
		keys := func(m map[string]any) string { return strings.Join(slices.Sorted(maps.Keys(m)), ",") }
		if keys(c) != keys(l) {
			t.Errorf("%s: CLI token has claims %s, login token %s", u.name, keys(c), keys(l))
		}
		for _, k := range []string{"iss", "sub", "adm"} {
			if c[k] != l[k] {
				t.Errorf("%s: claim %s is %v in the CLI token, %v in the login token", u.name, k, c[k], l[k])
			}
		}
		if c["exp"].(float64)-c["iat"].(float64) != l["exp"].(float64)-l["iat"].(float64) {
			t.Errorf("%s: lifetimes differ: CLI %v, login %v", u.name, c, l)
		}
	}
	// The account look-up the command uses is for admins only.
	bob := runCLI(t, bin, "", "token", "bob", "--data", data, "--server", p.http)
	if code, _ := httpJSON("GET", p.http+"/admin/users/alice", bob, nil, nil); code != http.StatusForbidden {
		t.Errorf("GET /admin/users/alice with a plain user's token: %d, want 403", code)
	}
	// An unknown user gets no token.
	if out, err := runCLIErr(bin, "", "token", "nobody", "--data", data, "--server", p.http); err == nil || !strings.Contains(out+err.Error(), "404") {
		t.Fatalf("token for an unknown user: %q %v", out, err)
	}
}
