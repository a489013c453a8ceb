package auth

import (
	"context"
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/edgechat/edgechat/internal/wire"
)

// One sign-in with a wrong password during an outage (the node cannot
// reach its leader to check the account as committed: 503), sent three
// times with its Idempotency-Key as the Go SDK's Login sends it, is one
// failed login, not three. Before, each send took a token of the
// name's bucket of failed logins (10, one back every 12 s) and of the
// address's: a user's own typo during an outage cost three, and four
// such sign-ins locked the name out (429) when the cluster came back.
func TestLoginSentAgainWithItsKeyDuringAnOutageCountsOnce(t *testing.T) {
	var down atomic.Bool
	e := newEnvWithBarrier(t, Config{KeyDir: t.TempDir() + "/keys", Argon2: tinyArgon}, func(context.Context) error {
		if down.Load() {
			return fmt.Errorf("no leader: %w", wire.ErrUnavailable)
		}
		return nil
	})
	e.register("alice", "alice-password")
	login := func(pw, key, ip string) int {
		req := httpRequest(http.MethodPost, "/auth/login", `{"username":"alice","password":"`+pw+`"}`, "application/json")
		if key != "" {
			req.Header.Set("Idempotency-Key", key)
		}
		req.RemoteAddr = ip + ":40000"
		return serve(e, req).Code
	}
	down.Store(true)
	for i := range 3 { // Login's three sends of one sign-in
		if code := login("alice-passwrod", "k-typo", "192.0.2.1"); code != http.StatusServiceUnavailable {
			t.Fatalf("send %d of the sign-in with a typo during the outage: %d, want 503", i+1, code)
		}
	}
	down.Store(false)
	// The name's bucket (burst 10) has 9 failures left, from other
	// addresses and under other keys (the clock does not move).
	left := 0
	for i := range 20 {
		code := login(fmt.Sprintf("guess-%d", i), fmt.Sprintf("k-guess-%d", i), fmt.Sprintf("198.51.100.%d", i+1))
		if code == http.StatusTooManyRequests {
			break
		}
		if code != http.StatusUnauthorized {
			t.Fatalf("guess %d: %d", i, code)
		}
		left++
	}
	if left != 9 {
		t.Fatalf("failed logins left to the name after one sign-in with a typo, sent 3 times with its key during an outage: %d, want 9", left)
	}
}

// Only a sign-in answered 503 is free to send again: one answered 401
// (a definite refusal) counts each time it is sent, so that the buckets
// of failed logins still bound the hashes one address makes with one
// request repeated.
func TestLoginSentAgainAfterARefusalCountsAgain(t *testing.T) {
	e := newEnv(t)
	e.register("alice", "alice-password")
	n := 0
	for ; n < 20; n++ {
		req := httpRequest(http.MethodPost, "/auth/login", `{"username":"alice","password":"wrong-password"}`, "application/json")
		req.Header.Set("Idempotency-Key", "k-same")
		req.RemoteAddr = "192.0.2.1:40000"
		code := serve(e, req).Code
		if code == http.StatusTooManyRequests {
			break
		}
		if code != http.StatusUnauthorized {
			t.Fatalf("send %d: %d", n+1, code)
		}
	}
	if n != 10 {
		t.Fatalf("one refused sign-in sent again with its key: %d refusals before 429, want 10 (the name's burst)", n)
	}
}
