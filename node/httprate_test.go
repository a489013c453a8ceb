package node_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
)

// The limits given with --http-rate are the ones the gateway enforces, on
// a real HTTP listener: a tighter read class refuses the fourth request,
// "off" lifts the per-IP bucket and the auth class entirely.
func TestConfiguredHTTPRateIsEnforced(t *testing.T) {
	loaded, err := node.LoadConfig([]string{"--http-rate", "read=0.5/3", "--http-rate", "all=off,auth=off"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	n := nodetest.StartNode(t, nodetest.WithConfig(func(c *node.Config) {
		c.NoRateLimits = false
		c.HTTPRate = loaded.HTTPRate
	}))
	tok := n.NewUser(t, "rhea")
	get := func(path, token string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, n.HTTPURL+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	for i := range 3 {
		if resp := get("/user/me", tok); resp.StatusCode != http.StatusOK {
			t.Fatalf("read %d of the burst of 3: %d", i+1, resp.StatusCode)
		}
	}
	// Default read is 20/s burst 40: only the configured limit refuses here.
	resp := get("/user/me", tok)
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "2" {
		t.Fatalf("fourth read: %d Retry-After %q, want 429 after 2s (0.5/s)", resp.StatusCode, resp.Header.Get("Retry-After"))
	}

	// auth=off: more bad refresh attempts than the default auth burst (10)
	// are all answered, none refused; all=off: more requests than the
	// default per-IP burst (100) pass.
	for i := range 30 {
		r, err := http.Post(n.HTTPURL+"/auth/refresh", "application/json", strings.NewReader(`{"refreshToken":"nope"}`))
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		if r.StatusCode != http.StatusUnauthorized {
			t.Fatalf("refresh %d with auth=off: %d", i+1, r.StatusCode)
		}
	}
	for i := range 250 {
		if resp := get("/healthz", ""); resp.StatusCode != http.StatusOK {
			t.Fatalf("request %d with all=off: %d", i+1, resp.StatusCode)
		}
	}
}
