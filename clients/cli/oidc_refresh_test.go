package cli_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgechat/edgechat/clients/cli"
	edgechat "github.com/edgechat/edgechat/clients/go"
	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/node/nodetest"
)

// A start cancelled while the kept session is being refreshed still
// keeps the rotated refresh token: the server spent the old one, and
// the next start presenting it would revoke the session.
func TestOIDCSessionKeepsTheRotatedTokenWhenTheStartIsCancelled(t *testing.T) {
	var mu sync.Mutex
	spent := map[string]bool{}
	reused := false
	enc := base64.RawURLEncoding
	jwt := enc.EncodeToString([]byte(`{"alg":"none"}`)) + "." + enc.EncodeToString([]byte(`{"sub":"tess"}`)) + ".sig"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/auth/refresh" {
			http.NotFound(w, r)
			return
		}
		var body struct {
			RefreshToken string `json:"refreshToken"`
		}
		_ = json.NewDecoder(r.Body).Decode(&body)
		mu.Lock()
		if spent[body.RefreshToken] {
			reused = true
			mu.Unlock()
			w.WriteHeader(401)
			_, _ = w.Write([]byte(`{"error":{"code":"refresh_reused","message":"family revoked"}}`))
			return
		}
		spent[body.RefreshToken] = true
		mu.Unlock()
		time.Sleep(200 * time.Millisecond) // the answer is slower than the caller's patience
		_ = json.NewEncoder(w).Encode(map[string]any{"accessToken": jwt, "refreshToken": body.RefreshToken + "+", "expiresIn": 900, "userId": "tess"})
	}))
	defer srv.Close()
	session := filepath.Join(t.TempDir(), "corp.json")
	if err := cli.SaveSession(session, edgechat.Tokens{RefreshToken: "r1", UserID: "tess"}); err != nil {
		t.Fatal(err)
	}
	login := cli.OIDCLogin{Server: srv.URL, Provider: "corp", SessionFile: session, Out: &strings.Builder{}}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, _ = login.Tokens(ctx) // the user gave up (Ctrl+C) during the refresh
	b, err := os.ReadFile(session)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"r1+"`) {
		t.Fatalf("session file %s: the rotated refresh token was not kept", b)
	}
	// The next start signs in with it.
	tk, err := login.Tokens(context.Background())
	mu.Lock()
	defer mu.Unlock()
	if err != nil || tk.UserID != "tess" || reused {
		t.Fatalf("next start: %+v %v (spent token presented again: %v)", tk, err, reused)
	}
}

// A start whose refresh of the kept session lost its answer (the node
// rotated the token; the connection dropped before the answer came)
// keeps its Idempotency-Key with the session, and the next start sends
// the refresh again under it: the node answers it as a retry, not as a
// reuse that would end the session. Real node; a proxy drops the first
// answer.
func TestOIDCSessionSurvivesARefreshWhoseAnswerWasLost(t *testing.T) {
	n := nodetest.StartNode(t)
	n.NewUser(t, "tess")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	tk, err := edgechat.Login(ctx, n.HTTPURL, "tess", nodetest.Password("tess"))
	if err != nil {
		t.Fatal(err)
	}
	proxy, loseNext, lost := testutil.LostAnswerProxy(t, n.HTTPURL, "/auth/refresh")
	loseNext()
	session := filepath.Join(t.TempDir(), "corp.json")
	if err := cli.SaveSession(session, tk); err != nil {
		t.Fatal(err)
	}
	login := cli.OIDCLogin{Server: proxy, Provider: "corp", SessionFile: session, Out: &strings.Builder{}}
	_, _ = login.Tokens(ctx) // the answer is lost; the provider's sign-in is not served here
	got, err := login.Tokens(ctx)
	if err != nil || got.UserID != "tess" {
		t.Fatalf("the next start: %+v %v, want signed in with the kept session", got, err)
	}
	if _, err := edgechat.Refresh(ctx, n.HTTPURL, got.RefreshToken); err != nil {
		t.Fatalf("the session after the retry: %v", err)
	}
	if !lost() {
		t.Fatal("no refresh answer was lost")
	}
}
