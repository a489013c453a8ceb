package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/internal/httpapi"
	"github.com/edgechat/edgechat/internal/wire"
)

// loginFrom signs user in over HTTP as a client with a device ID and a
// User-Agent.
func (e *env) loginFrom(user, pw, device, agent string) Tokens {
	e.t.Helper()
	b, _ := json.Marshal(map[string]string{"username": user, "password": pw, "device": device})
	req := httpRequest(http.MethodPost, "/auth/login", string(b), "application/json")
	req.Header.Set("User-Agent", agent)
	rec := serve(e, req)
	if rec.Code != http.StatusOK {
		e.t.Fatalf("login %s from %s: %d %s", user, device, rec.Code, rec.Body)
	}
	var tk Tokens
	if err := json.Unmarshal(rec.Body.Bytes(), &tk); err != nil {
		e.t.Fatal(err)
	}
	return tk
}

// asToken sends a request with the principal of tok, as the gateway
// would after verifying it.
func (e *env) asToken(tok, method, path string) resp {
	e.t.Helper()
	p, err := e.svc.VerifyAccessToken(tok)
	if err != nil {
		e.t.Fatalf("verify: %v", err)
	}
	req := httpRequest(method, path, "", "application/json")
	req = req.WithContext(httpapi.WithPrincipal(req.Context(), p))
	rec := serve(e, req)
	return resp{Code: rec.Code, Header: rec.Header(), Body: rec.Body.Bytes()}
}

func (e *env) sessions(tok string) []Session {
	e.t.Helper()
	r := e.asToken(tok, http.MethodGet, "/auth/sessions")
	var out struct{ Sessions []Session }
	if r.Code != http.StatusOK || json.Unmarshal(r.Body, &out) != nil {
		e.t.Fatalf("GET /auth/sessions: %d %s", r.Code, r.Body)
	}
	return out.Sessions
}

// A user lists their sessions (which device and browser, most recently
// used first, this one marked) and ends one: its refresh token and its
// access tokens are refused at once, on every node, and its connections
// are told to close; the other sessions, and other users', go on. No one
// ends a session that is not theirs.
func TestSessionsListedAndEnded(t *testing.T) {
	e := newEnv(t)
	follower, onFollower := e.follower()
	if err := e.svc.PublishKey(context.Background()); err != nil {
		t.Fatal(err)
	}
	var closed []string
	e.svc.OnSessionEnded(func(sid string) { closed = append(closed, sid) })
	e.register("alice", "password1")
	e.register("bob", "password2")
	phone := e.loginFrom("alice", "password1", "phone-1", "ChatApp/2.1 (Android 15)")
	e.clock.Advance(time.Minute)
	laptop := e.loginFrom("alice", "password1", "web-abc", "Mozilla/5.0 \x00(X11)")
	bobs := e.loginFrom("bob", "password2", "", "curl/8")
	ctx := context.Background()

	got := e.sessions(laptop.AccessToken)
	if len(got) != 2 || got[0].Device != "web-abc" || got[1].Device != "phone-1" || !got[0].Current || got[1].Current {
		t.Fatalf("alice's sessions: %+v", got)
	}
	if got[0].Agent != "Mozilla/5.0 (X11)" || got[1].Agent != "ChatApp/2.1 (Android 15)" {
		t.Fatalf("agents: %q %q (control characters must go)", got[0].Agent, got[1].Agent)
	}
	if got[1].CreatedAt == nil || !got[1].CreatedAt.Equal(got[1].LastUsedAt) || !got[1].ExpiresAt.After(e.clock.Now()) {
		t.Fatalf("the phone's times: %+v", got[1])
	}
	for _, s := range got {
		if strings.Contains(phone.RefreshToken+laptop.RefreshToken, s.ID) {
			t.Fatalf("a session ID %q is part of a refresh token", s.ID)
		}
	}
	// Using the phone's session moves it first.
	e.clock.Advance(time.Minute)
	phone, err := e.svc.Refresh(ctx, phone.RefreshToken)
	if err != nil {
		t.Fatal(err)
	}
	got = e.sessions(laptop.AccessToken)
	if got[0].Device != "phone-1" || !got[0].LastUsedAt.Equal(e.clock.Now().UTC()) {
		t.Fatalf("after the phone's refresh: %+v", got)
	}
	phoneSID, bobSID := got[0].ID, e.sessions(bobs.AccessToken)[0].ID

	for _, id := range []string{bobSID, "no-such-session"} {
		if r := e.asToken(laptop.AccessToken, http.MethodDelete, "/auth/sessions/"+id); r.Code != http.StatusNotFound {
			t.Fatalf("alice ends session %q: %d %s", id, r.Code, r.Body)
		}
	}
	if r := e.asToken(laptop.AccessToken, http.MethodDelete, "/auth/sessions/"+phoneSID); r.Code != http.StatusNoContent {
		t.Fatalf("alice ends her phone's session: %d %s", r.Code, r.Body)
	}
	for name, s := range map[string]*Service{"leader": e.svc, "follower": onFollower} {
		if _, err := s.VerifyAccessToken(phone.AccessToken); !errors.Is(err, wire.ErrBadToken) {
			t.Fatalf("the phone's access token on the %s: %v", name, err)
		}
		for _, tok := range []string{laptop.AccessToken, bobs.AccessToken} {
			if _, err := s.VerifyAccessToken(tok); err != nil {
				t.Fatalf("another session's token on the %s: %v", name, err)
			}
		}
	}
	if _, err := e.svc.Refresh(ctx, phone.RefreshToken); !errors.Is(err, ErrRefreshInvalid) {
		t.Fatalf("the phone's refresh token: %v", err)
	}
	if len(closed) != 1 || closed[0] != phoneSID {
		t.Fatalf("connections closed for sessions %q, want the phone's", closed)
	}
	if got := e.sessions(laptop.AccessToken); len(got) != 1 || got[0].Device != "web-abc" {
		t.Fatalf("alice's sessions after: %+v", got)
	}
	if _, err := e.svc.Refresh(ctx, bobs.RefreshToken); err != nil {
		t.Fatalf("bob's session: %v", err)
	}
	// A node that starts now still refuses the ended session's tokens.
	restarted := e.restartedOn(follower.DB(), t.TempDir()+"/keys")
	if _, err := restarted.VerifyAccessToken(phone.AccessToken); !errors.Is(err, wire.ErrBadToken) {
		t.Fatalf("the phone's token on a restarted node: %v", err)
	}
	// Sign out everywhere empties the list.
	if _, err := e.svc.LogoutAll(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	fresh := e.loginFrom("alice", "password1", "", "x")
	if got := e.sessions(fresh.AccessToken); len(got) != 1 || !got[0].Current {
		t.Fatalf("alice's sessions after signing out everywhere and in again: %+v", got)
	}
	// A malformed device is refused at login.
	r := e.post("/auth/login", map[string]string{"username": "alice", "password": "password1", "device": "no/slash"})
	if r.Code != http.StatusBadRequest {
		t.Fatalf("login with a malformed device: %d %s", r.Code, r.Body)
	}
}

// A family made before the index existed is listed once it is used (a
// refresh indexes it).
func TestSessionsListAFamilyMadeBeforeTheIndexOnceUsed(t *testing.T) {
	e := newEnv(t)
	e.register("alice", "password1")
	tk := e.login("alice", "password1")
	family, _, _ := parseRefresh(tk.RefreshToken)
	if err := e.db.Update(func(tx *badger.Txn) error { return unindexFamily(tx, "alice", family) }); err != nil {
		t.Fatal(err)
	}
	if got := e.sessions(tk.AccessToken); len(got) != 0 {
		t.Fatalf("an unindexed family is listed: %+v", got)
	}
	again, err := e.svc.Refresh(context.Background(), tk.RefreshToken)
	if err != nil {
		t.Fatal(err)
	}
	if got := e.sessions(again.AccessToken); len(got) != 1 || !got[0].Current {
		t.Fatalf("after a refresh: %+v", got)
	}
}

// The ended-session set forgets what no token can need any more.
func TestEndedSessionsForgetOldEntries(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	e := newEndedSessions(time.Minute)
	for i := range 1100 {
		e.put(fmt.Sprint("old-", i), now.Add(-2*time.Minute), now)
	}
	e.put("new", now, now)
	if _, ok := e.get("old-1"); ok {
		t.Fatal("an entry older than keep was kept")
	}
	if _, ok := e.get("new"); !ok {
		t.Fatal("a recent entry was dropped")
	}
}

// A user with more live sessions than the list shows (a script that
// signs in on every run rather than refreshing piles up hundreds within
// the refresh token's 30 days): GET /auth/sessions showed the first 500
// in the order of their random IDs, not the 500 most recently used, so
// the newest sign-in, the caller's own session included, could be
// missing; and a device named only by a session past those 500 counted
// as signed out, so ending another session of that device, or a sign
// out everywhere of others, dropped its push registration.
func TestSessionListOfAUserWithMoreSessionsThanItShows(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.register("alice", "password1")
	at := e.clock.Now()
	for i := range maxListedSessions + 10 {
		// IDs that sort before every real one ('!' is before base64url).
		b, _ := json.Marshal(refreshIssueCmd{Family: fmt.Sprintf("!old-%04d", i), UID: "alice", Hash: "h",
			ExpiresAt: at.Add(e.svc.cfg.RefreshTTL), At: at, Device: "tablet"})
		if _, err := e.prop.Propose(ctx, wire.CmdRefreshIssue, b); err != nil {
			t.Fatal(err)
		}
	}
	e.clock.Advance(time.Minute)
	tk := e.loginFrom("alice", "password1", "phone", "ChatApp/2.1")
	list := e.sessions(tk.AccessToken)
	if len(list) != maxListedSessions {
		t.Fatalf("listed %d sessions, want %d", len(list), maxListedSessions)
	}
	if !list[0].Current || list[0].Device != "phone" {
		t.Errorf("the most recently used session listed first: %+v, want the caller's (phone)", list[0])
	}
	devices, err := e.svc.signedInDevices("alice")
	if err != nil {
		t.Fatal(err)
	}
	if !devices["phone"] || !devices["tablet"] {
		t.Errorf("devices of alice's live sessions: %v, want phone and tablet", devices)
	}
}
