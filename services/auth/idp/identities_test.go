package idp_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/edgechat/edgechat/internal/httpapi"
	"github.com/edgechat/edgechat/services/auth"
	"github.com/edgechat/edgechat/services/auth/idp/idptest"
)

// link calls POST /user/me/identities with accessToken.
func (e *env) link(accessToken string, body map[string]string) (int, string) {
	e.t.Helper()
	var h http.HandlerFunc
	for _, r := range e.svc.Routes() {
		if r.Method == http.MethodPost && r.Pattern == "/user/me/identities" {
			h = r.Handler
		}
	}
	b, _ := json.Marshal(body)
	req := httptest.NewRequest(http.MethodPost, "/user/me/identities", strings.NewReader(string(b)))
	req.Header.Set("Content-Type", "application/json")
	p, err := e.auth.VerifyAccessToken(accessToken)
	if err != nil {
		e.t.Fatal(err)
	}
	req = req.WithContext(httpapi.WithPrincipal(req.Context(), p))
	w := httptest.NewRecorder()
	h(w, req)
	return w.Code, w.Body.String()
}

// A linked provider proves its user (to change the password, to delete
// the account), so linking one asks for the account's proof: with an
// access token alone, a thief would link their own provider account and
// take the account over for good.
func TestLinkingAProviderNeedsTheAccountsProof(t *testing.T) {
	e := newEnv(t)
	e.auth.SetProviderCheck(e.svc.CheckToken) // as the node wires it
	ctx := context.Background()
	if _, err := e.auth.CreateAccount(ctx, "alice", "alice-secret-pw", ""); err != nil {
		t.Fatal(err)
	}
	tok, err := e.auth.Login(ctx, "alice", "alice-secret-pw", "192.0.2.1")
	if err != nil {
		t.Fatal(err)
	}
	alice := tok.AccessToken
	mallorys := e.op.Token(idptest.Claims{"sub": "mallory-at-provider", "preferred_username": "mallory"})

	for name, c := range map[string]struct {
		body map[string]string
		want int
	}{
		"no proof":          {map[string]string{"provider": "test", "subjectToken": mallorys}, 400},
		"wrong password":    {map[string]string{"provider": "test", "subjectToken": mallorys, "currentPassword": "guess-guess"}, 403},
		"an unlinked token": {map[string]string{"provider": "test", "subjectToken": mallorys, "proofProvider": "test", "proofToken": mallorys}, 403},
		"both proofs":       {map[string]string{"provider": "test", "subjectToken": mallorys, "currentPassword": "alice-secret-pw", "proofProvider": "test", "proofToken": mallorys}, 400},
	} {
		if code, body := e.link(alice, c.body); code != c.want {
			t.Errorf("%s: %d %s, want %d", name, code, body, c.want)
		}
	}
	if links, err := e.auth.Identities("alice"); err != nil || len(links) != 0 {
		t.Fatalf("alice's links after the refused attempts: %v %v", links, err)
	}
	// Nor does the unlinked provider token prove alice to change her password.
	if _, err := e.auth.ChangePassword(ctx, "alice", auth.PasswordProof{Provider: "test", SubjectToken: mallorys}, "mallory-owns-it", "192.0.2.7"); !errors.Is(err, auth.ErrWrongPassword) {
		t.Fatalf("password change with an unlinked provider token: %v", err)
	}

	// With the password, alice links her own provider account.
	alices := e.op.Token(idptest.Claims{"sub": "alice-at-provider"})
	if code, body := e.link(alice, map[string]string{"provider": "test", "subjectToken": alices, "currentPassword": "alice-secret-pw"}); code != 200 {
		t.Fatalf("link with the password: %d %s", code, body)
	}
	// A provider-only account proves itself with a token of its provider.
	code, out := e.exchange("test", e.op.Token(idptest.Claims{"sub": "p-1", "preferred_username": "paula"}))
	if code != 200 {
		t.Fatalf("paula signs in: %d %v", code, out)
	}
	paula, _ := out["accessToken"].(string)
	p1 := e.op.Token(idptest.Claims{"sub": "p-1"})
	if code, body := e.link(paula, map[string]string{"provider": "test", "subjectToken": p1, "proofProvider": "test", "proofToken": p1}); code != 200 {
		t.Fatalf("paula links with her provider's token: %d %s", code, body)
	}
}
