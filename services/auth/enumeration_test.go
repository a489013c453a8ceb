package auth

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"strings"
	"testing"
)

// A password login to an account a provider created (it has no password)
// costs what a login to an unknown name costs: one hash, and the same
// answer. Before, it spent no hash at all (the empty stored hash failed
// to parse at once), so the time of a wrong login told an attacker which
// usernames are federated accounts, and each attempt logged an error.
func TestLoginToFederatedAccountSpendsAHashLikeAnUnknownName(t *testing.T) {
	e := newEnv(t)
	var logs bytes.Buffer
	e.svc.log = slog.New(slog.NewTextHandler(&logs, nil))
	if _, err := e.svc.SignInFederated(context.Background(), fid("s-1", "fed")); err != nil {
		t.Fatal(err)
	}
	before := e.svc.hasher.verifies.Load()
	r := e.post("/auth/login", map[string]string{"username": "nosuchuser", "password": "password1"})
	if r.Code != http.StatusUnauthorized || r.errCode() != CodeInvalidCredentials {
		t.Fatalf("unknown user: %d %s", r.Code, r.Body)
	}
	unknown := e.svc.hasher.verifies.Load() - before
	before = e.svc.hasher.verifies.Load()
	r = e.post("/auth/login", map[string]string{"username": "fed", "password": "password1"})
	if r.Code != http.StatusUnauthorized || r.errCode() != CodeInvalidCredentials {
		t.Fatalf("federated account: %d %s", r.Code, r.Body)
	}
	federated := e.svc.hasher.verifies.Load() - before
	if unknown != 1 || federated != unknown {
		t.Fatalf("hashes spent: unknown name %d, federated account %d; want 1 each", unknown, federated)
	}
	if strings.Contains(logs.String(), "unreadable") {
		t.Fatalf("a wrong login to a federated account logged an error:\n%s", logs.String())
	}
}
