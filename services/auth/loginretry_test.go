package auth

import (
	"context"
	"strings"
	"sync"
	"testing"
)

// A sign-in sent several times at once with one Idempotency-Key (a
// client's retries racing its first attempt) makes one session, and each
// attempt answers tokens of it; once that session is over, the key signs
// in anew.
func TestLoginSentAgainWithItsKeyAtOnceIsOneSession(t *testing.T) {
	e := newEnv(t)
	e.register("alice", "password-alice")
	ctx := WithClientInfo(context.Background(), ClientInfo{Device: "phone"})
	const n = 4
	var wg sync.WaitGroup
	toks := make([]Tokens, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			toks[i], errs[i] = e.svc.LoginWithKey(ctx, "alice", "password-alice", "192.0.2.1", "k1")
		}()
	}
	wg.Wait()
	family := ""
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("attempt %d: %v", i, errs[i])
		}
		f, _, _ := strings.Cut(toks[i].RefreshToken, ".")
		if family == "" {
			family = f
		} else if f != family {
			t.Fatalf("attempt %d made another session", i)
		}
	}
	if got, err := e.svc.Sessions("alice", ""); err != nil || len(got) != 1 {
		t.Fatalf("sessions: %d %v, want 1", len(got), err)
	}
	// The newest answer's refresh token is the session's.
	var newest Tokens
	for _, tk := range toks {
		if _, err := e.svc.VerifyAccessToken(tk.AccessToken); err != nil {
			t.Fatalf("an attempt's access token: %v", err)
		}
		if err := e.svc.Logout(context.Background(), tk.RefreshToken); err == nil {
			newest = tk
			break
		}
	}
	if newest.RefreshToken == "" {
		t.Fatal("no attempt's refresh token is the session's current one")
	}
	// Signed out: the key signs in again, into a new session.
	again, err := e.svc.LoginWithKey(ctx, "alice", "password-alice", "192.0.2.1", "k1")
	if err != nil {
		t.Fatal(err)
	}
	if f, _, _ := strings.Cut(again.RefreshToken, "."); f == family {
		t.Fatal("the key's ended session was answered")
	}
	if got, _ := e.svc.Sessions("alice", ""); len(got) != 1 {
		t.Fatalf("sessions after signing in again: %d, want 1", len(got))
	}
}
