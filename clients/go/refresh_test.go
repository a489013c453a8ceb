package edgechat

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// rotatingAuth is /auth/refresh as the server does it: each refresh
// token works once; presenting a spent one revokes the family. delay
// holds the answer after the rotation committed (server work, latency).
type rotatingAuth struct {
	mu      sync.Mutex
	valid   map[string]bool
	spent   map[string]bool
	revoked bool
	next    int
	calls   int
	delay   time.Duration
}

func newRotatingAuth(first string) *rotatingAuth {
	return &rotatingAuth{valid: map[string]bool{first: true}, spent: map[string]bool{}, next: 1}
}

func (a *rotatingAuth) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var body struct {
		RefreshToken string `json:"refreshToken"`
	}
	_ = json.NewDecoder(r.Body).Decode(&body)
	a.mu.Lock()
	a.calls++
	rt := body.RefreshToken
	switch {
	case a.spent[rt]:
		a.revoked = true
		a.mu.Unlock()
		w.WriteHeader(401)
		_, _ = w.Write([]byte(`{"error":{"code":"refresh_reused","message":"family revoked"}}`))
		return
	case a.revoked || !a.valid[rt]:
		a.mu.Unlock()
		w.WriteHeader(401)
		_, _ = w.Write([]byte(`{"error":{"code":"invalid_refresh_token","message":"no"}}`))
		return
	}
	a.spent[rt], a.valid[rt] = true, false
	a.next++
	nrt := fmt.Sprintf("r%d", a.next)
	a.valid[nrt] = true
	delay := a.delay
	a.mu.Unlock()
	time.Sleep(delay)
	_ = json.NewEncoder(w).Encode(map[string]any{"accessToken": fakeJWT("bob"), "refreshToken": nrt, "expiresIn": 900})
}

func (a *rotatingAuth) isRevoked() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.revoked
}

// A caller that stops waiting (a short deadline) does not abandon a
// refresh the server already performed: its tokens are kept and told to
// onRefresh, and the next call does not present the spent token (which
// would revoke the whole session).
func TestAbandonedRefreshKeepsTheRotatedToken(t *testing.T) {
	auth := newRotatingAuth("r1")
	auth.delay = 200 * time.Millisecond
	srv := httptest.NewServer(auth)
	defer srv.Close()
	saved := make(chan Tokens, 4)
	ts := RefreshingTokenSource(srv.URL, Tokens{RefreshToken: "r1"}, func(t Tokens) { saved <- t }) // access token due
	short, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := ts(short); err == nil {
		t.Fatal("expected the short call to time out")
	}
	// onRefresh hears of the new pair although its caller left.
	select {
	case got := <-saved:
		if got.RefreshToken != "r2" {
			t.Fatalf("onRefresh got %q, want r2", got.RefreshToken)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("onRefresh never told of the rotation its caller abandoned")
	}
	if _, err := ts(context.Background()); err != nil {
		t.Fatalf("next token call: %v (session revoked: %v)", err, auth.isRevoked())
	}
	if auth.isRevoked() {
		t.Fatal("the spent refresh token was presented again")
	}
}

// A refresh tried early (the access token within its last minute) that
// fails for now (a 503 while the node cannot commit, a lost answer)
// leaves the access token in use while it is still valid: calls and
// reconnections go on with it, and the next call tries the refresh
// again. A refused refresh (401: the session ended) is still an error,
// and so is any failure once the token has expired.
func TestEarlyRefreshFailingForNowKeepsTheValidToken(t *testing.T) {
	status := http.StatusServiceUnavailable
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		w.WriteHeader(status)
		_, _ = w.Write([]byte(`{"error":{"code":"unavailable","message":"cannot commit now; retry"}}`))
	}))
	defer srv.Close()
	ctx := context.Background()
	valid := Tokens{AccessToken: "a", RefreshToken: "r1", ExpiresIn: 900, Expiry: time.Now().Add(30 * time.Second)}
	if tok, err := RefreshingTokenSource(srv.URL, valid, nil)(ctx); err != nil || tok != "a" {
		t.Fatalf("refresh answered 503, access token valid 30 s more: %q, %v; want the valid token", tok, err)
	}
	expired := valid
	expired.Expiry = time.Now().Add(-time.Second)
	if _, err := RefreshingTokenSource(srv.URL, expired, nil)(ctx); err == nil {
		t.Fatal("refresh answered 503, access token expired: no error")
	}
	mu.Lock()
	status = http.StatusUnauthorized
	mu.Unlock()
	if _, err := RefreshingTokenSource(srv.URL, valid, nil)(ctx); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("refresh refused: %v, want ErrUnauthorized", err)
	}
}

// onRefresh may use the client (any call asks the token source): it
// runs outside the refresher's lock, so that the token source answers
// from it and afterwards, instead of every token call blocking for good.
func TestOnRefreshMayCallTheTokenSource(t *testing.T) {
	auth := newRotatingAuth("r1")
	srv := httptest.NewServer(auth)
	defer srv.Close()
	var ts TokenSource
	inner := make(chan error, 1)
	ts = RefreshingTokenSource(srv.URL, Tokens{RefreshToken: "r1"}, func(Tokens) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := ts(ctx) // what a client call made from onRefresh does first
		inner <- err
	})
	outer := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := ts(ctx)
		outer <- err
	}()
	select {
	case err := <-inner:
		if err != nil {
			t.Fatalf("token call from onRefresh: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a token call from onRefresh never returned (its context's end did not help either): deadlocked on the refresher's lock")
	}
	if err := <-outer; err != nil {
		t.Fatalf("the call that refreshed: %v", err)
	}
	if _, err := ts(context.Background()); err != nil {
		t.Fatalf("a later call: %v", err)
	}
}
