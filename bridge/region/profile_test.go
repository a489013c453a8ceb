package region_test

import (
	"net/http"
	"strings"
	"testing"
)

// GET /user/bob@us in eu answers us's profile of bob, fetched over the
// link (MQTT 5 request/response) and cached: 404 for a user us does not
// know and for a region that is not linked, and, with the link down,
// the cached copy for bob and 503 for carol, never fetched.
func TestRemoteProfile(t *testing.T) {
	eu, us := startRegions(t, 1, "eu", "us", nil)
	aliceTok := eu.newUser(t, "alice")
	us.newUser(t, "bob")
	us.newUser(t, "carol")

	var p struct {
		UserID      string `json:"userId"`
		DisplayName string `json:"displayName"`
	}
	if c := call(t, eu.nodes[0], aliceTok, "GET", "/user/bob@us", nil, &p); c != http.StatusOK || p.UserID != "bob@us" || p.DisplayName == "" {
		t.Fatalf("GET /user/bob@us: %d %+v", c, p)
	}
	if c := call(t, eu.nodes[0], aliceTok, "GET", "/user/alice@eu", nil, &p); c != http.StatusOK || p.UserID != "alice" {
		t.Fatalf("GET /user/alice@eu: %d %+v", c, p)
	}
	for _, path := range []string{"/user/nobody@us", "/user/bob@mars", "/user/bob@"} {
		if c := call(t, eu.nodes[0], aliceTok, "GET", path, nil, nil); c != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", path, c)
		}
	}
	if n := counter(t, us.nodes[0], "edgechat_region_link_received_total", `result="profile_request"`); n != 2 {
		t.Errorf("us answered %v profile requests, want 2 (bob, nobody)", n)
	}

	us.in.setCut(true) // eu's connections to us end, new ones are refused
	p.UserID = ""
	if c := call(t, eu.nodes[0], aliceTok, "GET", "/user/bob@us", nil, &p); c != http.StatusOK || p.UserID != "bob@us" {
		t.Fatalf("GET /user/bob@us, link down, cached: %d %+v", c, p)
	}
	var e struct {
		Error struct{ Code, Message string }
	}
	if c := call(t, eu.nodes[0], aliceTok, "GET", "/user/carol@us", nil, &e); c != http.StatusServiceUnavailable ||
		e.Error.Code != "unavailable" || !strings.Contains(e.Error.Message, "region us") {
		// Not "cannot commit now", which reads as this cluster's trouble.
		t.Fatalf("GET /user/carol@us, link down, not cached: %d %+v, want 503 unavailable naming region us", c, e)
	}
	us.in.setCut(false)
	if c := call(t, eu.nodes[0], aliceTok, "GET", "/user/carol@us", nil, &p); c != http.StatusOK || p.UserID != "carol@us" {
		t.Fatalf("GET /user/carol@us, link back: %d %+v", c, p)
	}
}
