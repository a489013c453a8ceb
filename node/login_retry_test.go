package node_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/edgechat/edgechat/node/nodetest"
)

// A sign-in sent again after a lost answer (the client timed out and
// retried) must not leave a second session behind each time: with the
// request's Idempotency-Key, through any node, the retry answers tokens
// of the session the first request made. Before, every retry made a new
// refresh-token family (another session in GET /auth/sessions, another
// refresh token living for 30 days).
func TestLoginRetriedWithItsIdempotencyKeyIsOneSession(t *testing.T) {
	nodes := nodetest.StartCluster(t, 2)
	leader, follower := nodes[0], nodes[1]
	leader.NewUser(t, "alice")
	type answer struct {
		AccessToken  string `json:"accessToken"`
		RefreshToken string `json:"refreshToken"`
		UserID       string `json:"userId"`
		Error        struct{ Code string }
	}
	login := func(n *nodetest.Node, key, device, password string) (int, answer) {
		t.Helper()
		st, b := apiKeyed(t, n, "", http.MethodPost, "/auth/login", key,
			map[string]string{"username": "alice", "password": password, "device": device})
		var a answer
		if err := json.Unmarshal(b, &a); err != nil {
			t.Fatalf("login answer %q: %v", b, err)
		}
		return st, a
	}
	family := func(a answer) string { f, _, _ := strings.Cut(a.RefreshToken, "."); return f }
	sessions := func(token string) []struct {
		ID      string `json:"id"`
		Current bool   `json:"current"`
	} {
		t.Helper()
		var got struct {
			Sessions []struct {
				ID      string `json:"id"`
				Current bool   `json:"current"`
			} `json:"sessions"`
		}
		if st := api(t, leader, token, http.MethodGet, "/auth/sessions", nil, &got); st != http.StatusOK {
			t.Fatalf("GET /auth/sessions: %d", st)
		}
		return got.Sessions
	}

	pw := nodetest.Password("alice")
	st, first := login(leader, "login-1", "phone", pw)
	if st != http.StatusOK {
		t.Fatalf("login: %d %+v", st, first)
	}
	before := len(sessions(first.AccessToken)) // NewUser signed in too
	st, again := login(follower, "login-1", "phone", pw)
	if st != http.StatusOK || again.UserID != "alice" || again.AccessToken == "" {
		t.Fatalf("the login sent again: %d %+v", st, again)
	}
	if family(again) != family(first) {
		t.Errorf("the login sent again with its key made another session")
	}
	if got := sessions(again.AccessToken); len(got) != before {
		t.Fatalf("sessions after a login and its retry: %+v, want %d", got, before)
	}
	// The retry's refresh token works.
	if st := api(t, follower, "", http.MethodPost, "/auth/refresh", map[string]string{"refreshToken": again.RefreshToken}, nil); st != http.StatusOK {
		t.Fatalf("refreshing the retry's token: %d", st)
	}
	// The key with a wrong password is a failed login; with another
	// device it is another request.
	if st, a := login(leader, "login-1", "phone", "wrong-password"); st != http.StatusUnauthorized {
		t.Fatalf("the key with a wrong password: %d %+v", st, a)
	}
	if st, a := login(leader, "login-1", "laptop", pw); st != http.StatusUnprocessableEntity || a.Error.Code != "idempotency_key_reused" {
		t.Fatalf("the key with another device: %d %+v", st, a)
	}
	// Another key, or none, is another sign-in.
	if st, _ := login(leader, "login-2", "laptop", pw); st != http.StatusOK {
		t.Fatalf("login with another key: %d", st)
	}
	if st, _ := login(leader, "", "tablet", pw); st != http.StatusOK {
		t.Fatalf("login without a key: %d", st)
	}
	if got := sessions(again.AccessToken); len(got) != before+2 {
		t.Fatalf("sessions: %d, want %d", len(got), before+2)
	}
}
