package idp_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgechat/edgechat/cluster/fsm/fsmtest"
	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/internal/wire"
	"github.com/edgechat/edgechat/services/auth"
	"github.com/edgechat/edgechat/services/auth/idp"
	"github.com/edgechat/edgechat/services/auth/idp/idptest"
)

type env struct {
	t     *testing.T
	op    *idptest.Provider
	auth  *auth.Service
	svc   *idp.Service
	clock *testutil.FakeClock
	srv   *httptest.Server
	reg   *prometheus.Registry
}

func newEnv(t *testing.T, mutate ...func(*idp.ProviderConfig)) *env {
	t.Helper()
	op := idptest.Start(t)
	h := fsmtest.New(t)
	clock := testutil.NewFakeClock(time.Now())
	a, err := auth.New(auth.Config{KeyDir: t.TempDir(), Argon2: auth.Argon2Params{MemoryKiB: 64, Time: 1, Threads: 1}},
		auth.Deps{DB: h.DB, Proposer: h, FSM: h.FSM, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	pc := idp.ProviderConfig{Name: "test", Issuer: op.Issuer, ClientID: idptest.ClientID, CAFile: op.CAFile,
		AcceptOnConnect: true, JWKSMinRefetch: 5 * time.Second, JWKSMaxAge: time.Minute}
	for _, m := range mutate {
		m(&pc)
	}
	reg := prometheus.NewRegistry()
	svc, err := idp.New(idp.Config{Providers: []idp.ProviderConfig{pc}},
		idp.Deps{Accounts: a, Proposer: h, FSM: h.FSM, Now: clock.Now, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	for _, r := range svc.Routes() {
		mux.HandleFunc(r.Method+" "+r.Pattern, r.Handler)
	}
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return &env{t: t, op: op, auth: a, svc: svc, clock: clock, srv: srv, reg: reg}
}

// exchange posts a subject token over real HTTP: status, body.
func (e *env) exchange(provider, token string) (int, map[string]any) {
	e.t.Helper()
	body, _ := json.Marshal(map[string]string{"subjectToken": token})
	resp, err := http.Post(e.srv.URL+"/auth/oidc/"+provider+"/token", "application/json", bytes.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		e.t.Fatalf("decode answer (%d): %v", resp.StatusCode, err)
	}
	return resp.StatusCode, out
}

func (e *env) accounts() int {
	e.t.Helper()
	n, err := e.auth.CountAccounts()
	if err != nil {
		e.t.Fatal(err)
	}
	return n
}

func TestExchangeCreatesTheAccountOnceAndAnswersLikeLogin(t *testing.T) {
	e := newEnv(t)
	tok := e.op.Token(idptest.Claims{"sub": "u-1", "preferred_username": "Alice", "name": "Alice A."})
	status, out := e.exchange("test", tok)
	if status != http.StatusOK {
		t.Fatalf("exchange: %d %v", status, out)
	}
	if out["userId"] != "alice" || out["accessToken"] == "" || out["refreshToken"] == "" || out["expiresIn"] == nil {
		t.Fatalf("answer %v: want userId alice and the fields of /auth/login", out)
	}
	p, err := e.auth.VerifyAccessToken(out["accessToken"].(string))
	if err != nil || p.UserID != "alice" || !p.Admin {
		t.Fatalf("edgechat token: %+v %v (the first account is an admin)", p, err)
	}
	// Again, with another token of the same subject: the same account.
	status, out = e.exchange("test", e.op.Token(idptest.Claims{"sub": "u-1", "preferred_username": "renamed"}))
	if status != http.StatusOK || out["userId"] != "alice" {
		t.Fatalf("second sign-in: %d %v", status, out)
	}
	if n := e.accounts(); n != 1 {
		t.Fatalf("%d accounts, want 1", n)
	}
	links, err := e.auth.Identities("alice")
	if err != nil || len(links) != 1 || links[0].Subject != "u-1" || links[0].Issuer != e.op.Issuer || links[0].Provider != "test" {
		t.Fatalf("links %+v %v", links, err)
	}
	// The refresh token works like a password login's.
	if _, err := e.auth.Refresh(context.Background(), out["refreshToken"].(string)); err != nil {
		t.Fatalf("refresh: %v", err)
	}
}

func TestUsernameClashGetsASuffixAndSubjectsNeverMerge(t *testing.T) {
	e := newEnv(t)
	want := []string{"alice", "alice2", "alice3"}
	for i, w := range want {
		status, out := e.exchange("test", e.op.Token(idptest.Claims{"sub": fmt.Sprint("s", i), "preferred_username": "alice"}))
		if status != http.StatusOK || out["userId"] != w {
			t.Fatalf("subject %d: %d %v, want %s", i, status, out, w)
		}
	}
	// A reserved name and a name that is no user ID.
	for _, c := range []struct{ claim, want string }{{"system", "system2"}, {"Ünïcode Name", "n_code_name"}, {"", "u7_"}} {
		sub := "x-" + c.want
		if c.claim == "" {
			sub = "7"
		}
		status, out := e.exchange("test", e.op.Token(idptest.Claims{"sub": sub, "preferred_username": c.claim}))
		if status != http.StatusOK || out["userId"] != c.want {
			t.Fatalf("claim %q: %d %v, want %s", c.claim, status, out, c.want)
		}
	}
}

func TestRefusedTokensCreateNothing(t *testing.T) {
	e := newEnv(t, func(c *idp.ProviderConfig) { c.RequiredClaim, c.RequiredValue = "groups", "chat" })
	ok := idptest.Claims{"sub": "u-9", "preferred_username": "mallory", "groups": []string{"staff", "chat"}}
	with := func(k string, v any) idptest.Claims {
		c := idptest.Claims{}
		for kk, vv := range ok {
			c[kk] = vv
		}
		c[k] = v
		return c
	}
	now := time.Now()
	cases := []struct {
		name   string
		token  string
		err    error
		status int
		code   string
	}{
		{"wrong aud", e.op.Token(with("aud", "someone-else")), idp.ErrWrongAudience, 401, idp.CodeInvalidSubjectToken},
		{"wrong iss", e.op.Token(with("iss", "https://evil.example")), idp.ErrWrongIssuer, 401, idp.CodeInvalidSubjectToken},
		{"alg none", e.op.UnsignedToken(ok), idp.ErrBadToken, 401, idp.CodeInvalidSubjectToken},
		{"HS256 keyed with the public key", e.op.HMACWithPublicKey(ok), idp.ErrBadToken, 401, idp.CodeInvalidSubjectToken},
		{"expired", e.op.Token(with("exp", now.Add(-2*time.Minute).Unix())), idp.ErrExpired, 401, idp.CodeInvalidSubjectToken},
		{"no exp", e.op.Token(with("exp", nil)), idp.ErrExpired, 401, idp.CodeInvalidSubjectToken},
		{"nbf in the future", e.op.Token(with("nbf", now.Add(5*time.Minute).Unix())), idp.ErrNotYetValid, 401, idp.CodeInvalidSubjectToken},
		{"iat in the future", e.op.Token(with("iat", now.Add(5*time.Minute).Unix())), idp.ErrNotYetValid, 401, idp.CodeInvalidSubjectToken},
		{"unknown kid", e.op.TokenWithKID("nope", ok), idp.ErrBadSignature, 401, idp.CodeInvalidSubjectToken},
		{"tampered payload", tamper(e.op.Token(ok)), idp.ErrBadSignature, 401, idp.CodeInvalidSubjectToken},
		{"no subject", e.op.Token(with("sub", nil)), idp.ErrNoSubject, 401, idp.CodeInvalidSubjectToken},
		{"required claim missing", e.op.Token(with("groups", []string{"staff"})), idp.ErrClaimRequired, 403, idp.CodeClaimRequired},
		{"not a JWT", "hello", idp.ErrBadToken, 401, idp.CodeInvalidSubjectToken},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, _ := e.svc.Provider("test")
			if _, err := p.Verify(context.Background(), c.token, ""); !errors.Is(err, c.err) {
				t.Fatalf("Verify: %v, want %v", err, c.err)
			}
			status, out := e.exchange("test", c.token)
			if status != c.status || code(out) != c.code {
				t.Fatalf("exchange: %d %v, want %d %s", status, out, c.status, c.code)
			}
		})
	}
	if status, out := e.exchange("nope", e.op.Token(ok)); status != 404 || code(out) != idp.CodeUnknownProvider {
		t.Fatalf("unknown provider: %d %v", status, out)
	}
	if n := e.accounts(); n != 0 {
		t.Fatalf("%d accounts after refusals, want 0", n)
	}
	// The same claims, validly signed, get in: the refusals were for the reasons named.
	if status, out := e.exchange("test", e.op.Token(ok)); status != 200 {
		t.Fatalf("valid token: %d %v", status, out)
	}
	// Within the clock-skew allowance, a token a little expired still passes.
	if status, out := e.exchange("test", e.op.Token(with("exp", now.Add(-20*time.Second).Unix()))); status != 200 {
		t.Fatalf("token 20s past exp (skew 1m): %d %v", status, out)
	}
}

// code is the error code of an HTTP error answer.
func code(out map[string]any) string {
	e, _ := out["error"].(map[string]any)
	s, _ := e["code"].(string)
	return s
}

// tamper changes the payload of a signed token (sub), keeping the signature.
func tamper(tok string) string {
	parts := bytes.Split([]byte(tok), []byte("."))
	i := len(parts[1]) / 2
	if parts[1][i] == 'A' {
		parts[1][i] = 'B'
	} else {
		parts[1][i] = 'A'
	}
	return string(bytes.Join(parts, []byte(".")))
}

func TestKeyRotationMidRun(t *testing.T) {
	e := newEnv(t)
	p, _ := e.svc.Provider("test")
	ctx := context.Background()
	old := e.op.Token(idptest.Claims{"sub": "u-1"})
	if _, err := p.Verify(ctx, old, ""); err != nil {
		t.Fatal(err)
	}
	hits := e.op.JWKSHits()
	// The provider rotates: new tokens carry a new kid, the old key stays
	// published for a while.
	e.op.Rotate()
	fresh := e.op.Token(idptest.Claims{"sub": "u-2"})
	e.clock.Advance(6 * time.Second) // past JWKSMinRefetch since the first fetch
	if _, err := p.Verify(ctx, fresh, ""); err != nil {
		t.Fatalf("a token of the new key, no restart: %v", err)
	}
	if got := e.op.JWKSHits() - hits; got != 1 {
		t.Fatalf("%d JWKS fetches for the new kid, want 1", got)
	}
	if _, err := p.Verify(ctx, old, ""); err != nil {
		t.Fatalf("a token of the old key, still published: %v", err)
	}
	// The provider removes the old key: once the cache expires, tokens of
	// the old key stop working; the new key's keep working. The first
	// token past JWKSMaxAge is checked with the keys cached while it
	// starts their refresh in the background.
	e.op.DropOldKeys()
	e.clock.Advance(2 * time.Minute) // past JWKSMaxAge
	fetched := e.jwksFetches("ok")
	if _, err := p.Verify(ctx, fresh, ""); err != nil {
		t.Fatalf("a token of the current key, stale keys: %v", err)
	}
	testutil.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if e.jwksFetches("ok") == fetched {
			return errors.New("the stale keys were not fetched again")
		}
		return nil
	})
	if _, err := p.Verify(ctx, old, ""); !errors.Is(err, idp.ErrBadSignature) {
		t.Fatalf("a token of a removed key: %v, want ErrBadSignature", err)
	}
	if _, err := p.Verify(ctx, fresh, ""); err != nil {
		t.Fatalf("a token of the current key: %v", err)
	}
}

func TestBogusKidFloodIsRateLimited(t *testing.T) {
	e := newEnv(t)
	p, _ := e.svc.Provider("test")
	ctx := context.Background()
	if _, err := p.Verify(ctx, e.op.Token(idptest.Claims{"sub": "u"}), ""); err != nil {
		t.Fatal(err)
	}
	hits := e.op.JWKSHits()
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := p.Verify(ctx, e.op.TokenWithKID(fmt.Sprint("bogus-", i), idptest.Claims{"sub": "u"}), "")
			if !errors.Is(err, idp.ErrBadSignature) {
				t.Errorf("bogus kid %d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	if got := e.op.JWKSHits() - hits; got != 0 {
		t.Fatalf("%d JWKS fetches for 50 bogus kids within the refetch interval, want 0", got)
	}
	e.clock.Advance(6 * time.Second)
	for i := range 50 {
		_, _ = p.Verify(ctx, e.op.TokenWithKID(fmt.Sprint("bogus2-", i), idptest.Claims{"sub": "u"}), "")
	}
	if got := e.op.JWKSHits() - hits; got != 1 {
		t.Fatalf("%d JWKS fetches once the interval passed, want 1", got)
	}
}

func TestProviderDownThenUp(t *testing.T) {
	e := newEnv(t)
	e.op.SetDown(true)
	tok := e.op.Token(idptest.Claims{"sub": "u-1", "preferred_username": "bob"})
	status, out := e.exchange("test", tok)
	if status != http.StatusServiceUnavailable || code(out) != idp.CodeProviderUnavailable {
		t.Fatalf("provider down: %d %v", status, out)
	}
	// Retries are spaced: a second sign-in at once does not ask again.
	hits := e.op.DiscoveryHits()
	if status, _ := e.exchange("test", tok); status != http.StatusServiceUnavailable || e.op.DiscoveryHits() != hits {
		t.Fatalf("second attempt: %d, discovery hits %d -> %d", status, hits, e.op.DiscoveryHits())
	}
	if n := e.accounts(); n != 0 {
		t.Fatalf("%d accounts while the provider was down", n)
	}
	e.op.SetDown(false)
	e.clock.Advance(6 * time.Second)
	if status, out := e.exchange("test", tok); status != http.StatusOK || out["userId"] != "bob" {
		t.Fatalf("provider back: %d %v", status, out)
	}
	// Down again once keys are cached: tokens still verify (stale keys
	// serve while the provider cannot be reached).
	e.op.SetDown(true)
	e.clock.Advance(2 * time.Minute)
	p, _ := e.svc.Provider("test")
	if _, err := p.Verify(context.Background(), e.op.Token(idptest.Claims{"sub": "u-1"}), ""); err != nil {
		t.Fatalf("provider down with cached keys: %v", err)
	}
}

func TestConnectPrincipal(t *testing.T) {
	e := newEnv(t)
	p, handled, err := e.svc.ConnectPrincipal(e.op.Token(idptest.Claims{"sub": "u-1", "preferred_username": "carol"}))
	if !handled || err != nil || p.UserID != "carol" {
		t.Fatalf("provider token: %+v %v %v", p, handled, err)
	}
	_, handled, err = e.svc.ConnectPrincipal(e.op.Token(idptest.Claims{"sub": "u-1", "aud": "other"}))
	if !handled || !errors.Is(err, wire.ErrBadToken) || !errors.Is(err, idp.ErrWrongAudience) {
		t.Fatalf("wrong aud: %v %v", handled, err)
	}
	// Not a provider token: left to the edgechat verifier.
	if _, handled, _ := e.svc.ConnectPrincipal("some.edgechat.token"); handled {
		t.Fatal("a non-JWT was handled")
	}
	if _, handled, _ := e.svc.ConnectPrincipal(e.op.Token(idptest.Claims{"sub": "u-1", "iss": "edgechat"})); handled {
		t.Fatal("a token of another issuer was handled")
	}
}

// A suspended account cannot sign in through its provider: the token
// exchange answers 403 account_suspended, MQTT CONNECT with the
// provider's token is refused; once lifted, both work.
func TestSuspendedAccountThroughItsProvider(t *testing.T) {
	e := newEnv(t)
	tok := e.op.Token(idptest.Claims{"sub": "u-9", "preferred_username": "mallory"})
	if status, out := e.exchange("test", tok); status != 200 {
		t.Fatalf("first sign-in: %d %v", status, out)
	}
	ctx := context.Background()
	if err := e.auth.SetSuspended(ctx, "mallory", true); err != nil {
		t.Fatal(err)
	}
	if status, out := e.exchange("test", tok); status != http.StatusForbidden || code(out) != auth.CodeSuspended {
		t.Fatalf("a suspended account's token exchange: %d %v", status, out)
	}
	if _, handled, err := e.svc.ConnectPrincipal(tok); !handled || !errors.Is(err, wire.ErrBadToken) {
		t.Fatalf("a suspended account's CONNECT with its provider's token: %v %v", handled, err)
	}
	if err := e.auth.SetSuspended(ctx, "mallory", false); err != nil {
		t.Fatal(err)
	}
	if status, out := e.exchange("test", tok); status != 200 {
		t.Fatalf("after the suspension was lifted: %d %v", status, out)
	}
	if p, _, err := e.svc.ConnectPrincipal(tok); err != nil || p.UserID != "mallory" {
		t.Fatalf("CONNECT after the suspension was lifted: %+v %v", p, err)
	}
}

// A provider's token presented at MQTT CONNECT is the session's
// credential: once the user signs out everywhere (or changes the
// password, which does it), a token the provider issued before is
// refused, and one issued after is accepted. The exchange (a sign-in,
// as with a password) still takes the old token.
func TestProviderTokenOnConnectAfterSignOutEverywhere(t *testing.T) {
	e := newEnv(t)
	old := e.op.Token(idptest.Claims{"sub": "u-7", "preferred_username": "erin", "iat": e.clock.Now().Add(-10 * time.Second).Unix()})
	if p, _, err := e.svc.ConnectPrincipal(old); err != nil || p.UserID != "erin" {
		t.Fatalf("CONNECT with the provider's token: %+v %v", p, err)
	}
	if _, err := e.auth.LogoutAll(context.Background(), "erin"); err != nil {
		t.Fatal(err)
	}
	_, handled, err := e.svc.ConnectPrincipal(old)
	if !handled || !errors.Is(err, wire.ErrBadToken) || !errors.Is(err, auth.ErrSignedOutSince) {
		t.Fatalf("CONNECT with a token issued before the sign-out: handled %v, %v", handled, err)
	}
	e.clock.Advance(2 * time.Second)
	fresh := e.op.Token(idptest.Claims{"sub": "u-7", "preferred_username": "erin", "iat": e.clock.Now().Unix()})
	if p, _, err := e.svc.ConnectPrincipal(fresh); err != nil || p.UserID != "erin" {
		t.Fatalf("CONNECT with a token issued after the sign-out: %+v %v", p, err)
	}
	if status, out := e.exchange("test", old); status != 200 {
		t.Fatalf("token exchange of the old token: %d %v", status, out)
	}
}

func TestConnectNeedsAcceptOnConnect(t *testing.T) {
	e := newEnv(t, func(c *idp.ProviderConfig) { c.AcceptOnConnect = false })
	if _, handled, _ := e.svc.ConnectPrincipal(e.op.Token(idptest.Claims{"sub": "u-1"})); handled {
		t.Fatal("a provider without accept_on_connect verified a CONNECT password")
	}
}

func TestExchangeIntoABrowserSession(t *testing.T) {
	e := newEnv(t)
	body, _ := json.Marshal(map[string]string{"subjectToken": e.op.Token(idptest.Claims{"sub": "u-1", "preferred_username": "sam"}), "session": "cookie"})
	resp, err := http.Post(e.srv.URL+"/auth/oidc/test/token", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	var cookie *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == auth.SessionCookie {
			cookie = c
		}
	}
	if resp.StatusCode != 200 || out["userId"] != "sam" || out["refreshToken"] != nil || cookie == nil || !cookie.HttpOnly || cookie.Value == "" {
		t.Fatalf("exchange into a session: %d %v cookie %+v", resp.StatusCode, out, cookie)
	}
	if _, err := e.auth.Refresh(context.Background(), cookie.Value); err != nil {
		t.Fatalf("the cookie's refresh token: %v", err)
	}
	body, _ = json.Marshal(map[string]string{"subjectToken": "a.b.c", "session": "jar"})
	if resp, err := http.Post(e.srv.URL+"/auth/oidc/test/token", "application/json", bytes.NewReader(body)); err != nil || resp.StatusCode != 400 {
		t.Fatalf("bad session mode: %v %v", resp.StatusCode, err)
	}
}

// The exchange names the device signing in, as a password login does; a
// malformed device name is refused before anything is created.
func TestExchangeNamesTheDevice(t *testing.T) {
	e := newEnv(t)
	post := func(device string) (int, map[string]any) {
		body, _ := json.Marshal(map[string]string{"subjectToken": e.op.Token(idptest.Claims{"sub": "u-1", "preferred_username": "sam"}), "device": device})
		req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/auth/oidc/test/token", bytes.NewReader(body))
		req.Header.Set("User-Agent", "edgechat-cli/1")
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out
	}
	if status, out := post("no/slash"); status != http.StatusBadRequest || fmt.Sprint(out["error"]) != fmt.Sprint(map[string]any{"code": "validation_failed", "message": `auth: invalid device ID: "no/slash": ` + wire.NewDeviceIDRule}) {
		t.Fatalf("a malformed device: %d %v, want 400 validation_failed", status, out)
	}
	if n := e.accounts(); n != 0 {
		t.Fatalf("%d accounts after a refused exchange, want 0", n)
	}
	status, out := post("laptop")
	if status != http.StatusOK || out["userId"] != "sam" {
		t.Fatalf("exchange: %d %v", status, out)
	}
	sessions, err := e.auth.Sessions("sam", "")
	if err != nil || len(sessions) != 1 || sessions[0].Device != "laptop" || sessions[0].Agent != "edgechat-cli/1" {
		t.Fatalf("sessions %+v %v: want one named laptop, by edgechat-cli/1", sessions, err)
	}
}

func TestHangingProviderDoesNotHoldCallersPastTheirDeadline(t *testing.T) {
	release := make(chan struct{})
	hang := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer hang.Close()
	defer close(release)
	h := fsmtest.New(t)
	a, err := auth.New(auth.Config{KeyDir: t.TempDir(), Argon2: auth.Argon2Params{MemoryKiB: 64, Time: 1, Threads: 1}},
		auth.Deps{DB: h.DB, Proposer: h, FSM: h.FSM})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := idp.New(idp.Config{Providers: []idp.ProviderConfig{{Name: "slow", Issuer: hang.URL, ClientID: "c"}},
		HTTPClient: hang.Client()}, idp.Deps{Accounts: a})
	if err != nil {
		t.Fatal(err)
	}
	p, _ := svc.Provider("slow")
	for range 2 { // the second caller joins the running discovery, with its own deadline
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		start := time.Now()
		_, err := p.Verify(ctx, "a.b.c", "")
		cancel()
		if !errors.Is(err, idp.ErrProviderUnavailable) || time.Since(start) > 5*time.Second {
			t.Fatalf("a hanging provider: %v after %v", err, time.Since(start))
		}
	}
}

func TestUsernameClaims(t *testing.T) {
	for _, c := range []struct {
		claim string
		extra idptest.Claims
		want  string
	}{
		{idp.ClaimEmail, idptest.Claims{"email": "Vera.K@example.com"}, "vera.k"},
		{idp.ClaimEmail, idptest.Claims{"email": "v@example.com", "email_verified": false}, "u0042"}, // unverified: the subject
		{idp.ClaimSub, idptest.Claims{"preferred_username": "vera"}, "u0042"},
		{idp.ClaimPreferredUsername, idptest.Claims{"preferred_username": "vera", "email": "x@example.com"}, "vera"},
	} {
		t.Run(c.claim+"/"+c.want, func(t *testing.T) {
			e := newEnv(t, func(pc *idp.ProviderConfig) { pc.UsernameClaim = c.claim })
			claims := idptest.Claims{"sub": "0042"}
			for k, v := range c.extra {
				claims[k] = v
			}
			status, out := e.exchange("test", e.op.Token(claims))
			if status != 200 || out["userId"] != c.want {
				t.Fatalf("%d %v, want %s", status, out, c.want)
			}
		})
	}
}

func TestAudienceListAndConfiguredAudience(t *testing.T) {
	e := newEnv(t, func(pc *idp.ProviderConfig) { pc.Audience = "chat-api" })
	if status, out := e.exchange("test", e.op.Token(idptest.Claims{"sub": "a", "aud": []string{"account", "chat-api"}})); status != 200 {
		t.Fatalf("aud list holding the audience: %d %v", status, out)
	}
	if status, _ := e.exchange("test", e.op.Token(idptest.Claims{"sub": "b"})); status != 401 {
		t.Fatalf("aud = client ID when another audience is configured: %d", status)
	}
}

// The token exchange, which may set the browser's session cookie, takes
// only a body that says it is JSON (see auth's TestCookieEndpointsTakeOnlyJSON).
func TestExchangeTakesOnlyJSON(t *testing.T) {
	e := newEnv(t)
	tok := e.op.Token(idptest.Claims{"sub": "u-1", "preferred_username": "Alice"})
	body, _ := json.Marshal(map[string]string{"subjectToken": tok, "session": "cookie"})
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/auth/oidc/test/token", bytes.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnsupportedMediaType || len(resp.Cookies()) != 0 || e.accounts() != 0 {
		t.Fatalf("an exchange without a Content-Type: %d, cookies %v, %d accounts", resp.StatusCode, resp.Cookies(), e.accounts())
	}
	if code, _ := e.exchange("test", tok); code != http.StatusOK {
		t.Fatalf("the exchange: %d", code)
	}
}
