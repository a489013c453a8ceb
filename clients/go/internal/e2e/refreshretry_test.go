package e2e_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	edgechat "github.com/edgechat/edgechat/clients/go"
	"github.com/edgechat/edgechat/internal/testutil"
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
	proxy, loseNext, lost := testutil.LostAnswerProxy(t, n.HTTPURL, "/auth/refresh")
	loseNext()
	tk.Expiry = time.Now() // due for a refresh
	var saved []edgechat.Tokens
	ts := edgechat.RefreshingTokenSource(proxy, tk, func(nt edgechat.Tokens) { saved = append(saved, nt) })
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
	if !lost() {
		t.Fatal("no refresh answer was lost")
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

// A sign-in whose answer is lost (the node made the session, then the
// connection dropped) is sent again by Login with the same
// Idempotency-Key: the caller gets tokens, and the user has one session,
// not two. Before, Login failed, and the caller's own retry made a
// second session the user never used.
func TestLoginAgainAfterALostAnswerIsOneSession(t *testing.T) {
	n := nodetest.StartNode(t)
	n.NewUser(t, "alice")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	proxy, loseNext, lost := testutil.LostAnswerProxy(t, n.HTTPURL, "/auth/login")
	loseNext()
	tk, err := edgechat.LoginDevice(ctx, proxy, "alice", nodetest.Password("alice"), "phone")
	if err != nil {
		t.Fatalf("login whose first answer was lost: %v", err)
	}
	if !lost() {
		t.Fatal("no login answer was lost")
	}
	var out struct {
		Sessions []struct {
			ID      string `json:"id"`
			Device  string `json:"device"`
			Current bool   `json:"current"`
		} `json:"sessions"`
	}
	if err := getJSON(ctx, n.HTTPURL+"/auth/sessions", tk.AccessToken, &out); err != nil {
		t.Fatal(err)
	}
	phones := 0
	for _, s := range out.Sessions {
		if s.Device == "phone" {
			phones++
			if !s.Current {
				t.Fatalf("the phone's session %s is not the one the retry answered with", s.ID)
			}
		}
	}
	if phones != 1 {
		t.Fatalf("sessions %+v, want one of the phone", out.Sessions)
	}
}
