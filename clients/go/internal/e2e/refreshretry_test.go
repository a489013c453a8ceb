package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	edgechat "github.com/edgechat/edgechat/clients/go"
	"github.com/edgechat/edgechat/node/nodetest"
)

// A refresh whose answer is lost (the node rotated the token, then the
// connection dropped before the answer arrived) is sent again by the
// token source with the same Idempotency-Key, and the node answers it
// as a retry: the session goes on. Without the key the spent token came
// back as a reuse and the user was signed out everywhere.
func TestTokenSourceRefreshAgainAfterALostAnswerKeepsTheSession(t *testing.T) {
	n := nodetest.StartNode(t)
	n.NewUser(t, "alice")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	tk, err := edgechat.Login(ctx, n.HTTPURL, "alice", nodetest.Password("alice"))
	if err != nil {
		t.Fatal(err)
	}
	// A proxy that forwards the first refresh and drops its answer.
	var refreshes atomic.Int32
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		req, _ := http.NewRequestWithContext(r.Context(), r.Method, n.HTTPURL+r.URL.Path, bytes.NewReader(body))
		req.Header = r.Header.Clone()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		if r.URL.Path == "/auth/refresh" && refreshes.Add(1) == 1 {
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				conn.Close() // the node rotated the token; its answer is lost
			}
			return
		}
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, resp.Body)
	}))
	defer proxy.Close()

	tk.Expiry = time.Now() // due for a refresh
	var saved []edgechat.Tokens
	ts := edgechat.RefreshingTokenSource(proxy.URL, tk, func(nt edgechat.Tokens) { saved = append(saved, nt) })
	if _, err := ts(ctx); err == nil {
		t.Fatal("the refresh whose answer was lost succeeded")
	}
	access, err := ts(ctx)
	if err != nil {
		t.Fatalf("the refresh sent again: %v (want it answered as a retry)", err)
	}
	if len(saved) != 1 || saved[0].RefreshToken == tk.RefreshToken {
		t.Fatalf("saved %d token pairs, want the retry's one", len(saved))
	}
	// The session lives: the new access token works, and so does the
	// next rotation.
	var me struct {
		UserID string `json:"userId"`
	}
	if err := getJSON(ctx, n.HTTPURL+"/user/me", access, &me); err != nil || me.UserID != "alice" {
		t.Fatalf("GET /user/me with the retry's access token: %+v %v", me, err)
	}
	if _, err := edgechat.Refresh(ctx, n.HTTPURL, saved[0].RefreshToken); err != nil {
		t.Fatalf("the next rotation: %v", err)
	}
	if got := refreshes.Load(); got != 2 {
		t.Fatalf("%d refreshes reached the proxy, want 2", got)
	}
}

func getJSON(ctx context.Context, url, token string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return errors.New(resp.Status + ": " + strings.TrimSpace(string(b)))
	}
	return json.Unmarshal(b, out)
}
