package node_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgechat/edgechat/internal/httpapi"
	"github.com/edgechat/edgechat/internal/testutil/mqtttest"
	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
	"github.com/edgechat/edgechat/services/auth/idp"
	"github.com/edgechat/edgechat/services/auth/idp/idptest"
)

// appRedirect is the app URL the code flow may return to.
const appRedirect = "https://app.example/signed-in"

// withOIDC configures op as the provider "corp" (oidc_providers), MQTT
// CONNECT accepting its tokens.
func withOIDC(op *idptest.Provider) nodetest.Option {
	return nodetest.WithConfig(func(c *node.Config) {
		c.OIDCProviders = []idp.ProviderConfig{{Name: "corp", Issuer: op.Issuer, ClientID: idptest.ClientID, CAFile: op.CAFile,
			Redirects: []string{appRedirect}}}
		c.OIDCAcceptOnConnect = true
	})
}

type loginAnswer struct {
	AccessToken  string `json:"accessToken"`
	RefreshToken string `json:"refreshToken"`
	ExpiresIn    int    `json:"expiresIn"`
	UserID       string `json:"userId"`
	Error        struct {
		Code string `json:"code"`
	} `json:"error"`
}

func exchange(t testing.TB, n *nodetest.Node, provider, subjectToken string) (int, loginAnswer) {
	t.Helper()
	var out loginAnswer
	status := api(t, n, "", http.MethodPost, "/auth/oidc/"+provider+"/token", map[string]string{"subjectToken": subjectToken}, &out)
	return status, out
}

func accounts(t testing.TB, n *nodetest.Node) int {
	t.Helper()
	c, err := n.Auth.CountAccounts()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestOIDCTokenExchangeAndMQTTConnect(t *testing.T) {
	op := idptest.Start(t)
	n := nodetest.StartNode(t, withOIDC(op))
	bobTok := n.NewUser(t, "bob") // a password user, for contrast

	var provs struct {
		Providers []struct {
			Name, Issuer, ClientID string
			CodeFlow               bool
		}
	}
	if st := api(t, n, "", http.MethodGet, "/auth/oidc/providers", nil, &provs); st != 200 || len(provs.Providers) != 1 ||
		provs.Providers[0].Name != "corp" || provs.Providers[0].Issuer != op.Issuer || provs.Providers[0].ClientID != idptest.ClientID || !provs.Providers[0].CodeFlow {
		t.Fatalf("GET /auth/oidc/providers: %d %+v", st, provs)
	}
	tok := op.Token(idptest.Claims{"sub": "0f3c-11", "preferred_username": "Dana", "name": "Dana Scully", "picture": "https://sso.example/dana.png"})
	status, got := exchange(t, n, "corp", tok)
	if status != http.StatusOK || got.UserID != "dana" || got.AccessToken == "" || got.RefreshToken == "" || got.ExpiresIn <= 0 {
		t.Fatalf("exchange: %d %+v", status, got)
	}
	var me struct {
		UserID      string `json:"userId"`
		DisplayName string `json:"displayName"`
		Avatar      string `json:"avatar"`
	}
	if st := api(t, n, got.AccessToken, http.MethodGet, "/user/me", nil, &me); st != 200 || me.UserID != "dana" || me.DisplayName != "Dana Scully" ||
		me.Avatar != "https://sso.example/dana.png" {
		t.Fatalf("GET /user/me with the edgechat token: %d %+v", st, me)
	}
	// The refresh token works as a password login's does.
	var refreshed loginAnswer
	if st := api(t, n, "", http.MethodPost, "/auth/refresh", map[string]string{"refreshToken": got.RefreshToken}, &refreshed); st != 200 || refreshed.UserID != "dana" {
		t.Fatalf("refresh: %d %+v", st, refreshed)
	}

	// MQTT 5 CONNECT with the provider's JWT as the password.
	v5 := mustConnectV5(t, n.MQTTURL[len("tcp://"):], "dana", "phone", tok)
	v5.MustSub(t, "user/dana/newMessage")
	bob := mustConnectV5(t, n.MQTTURL[len("tcp://"):], "bob", "laptop", bobTok)
	if code, _ := bob.Pub(t, "user/dana/newMessage", 1, textMsg("c1", "hi dana")); code != 0 {
		t.Fatalf("PUBACK %#x", code)
	}
	if m := v5.Next(t); decodeEnvelope(t, m.Payload).From != "bob" {
		t.Fatalf("delivered %s", m.Payload)
	}
	// MQTT 3.1.1 the same way.
	opts := mqtt3.NewClientOptions().AddBroker(n.MQTTURL).SetClientID("dana/old").SetUsername("dana").
		SetPassword(tok).SetProtocolVersion(4).SetAutoReconnect(false)
	old := mqtt3.NewClient(opts)
	if ct := old.Connect(); !ct.WaitTimeout(10*time.Second) || ct.Error() != nil {
		t.Fatalf("3.1.1 CONNECT with a provider JWT: %v", ct.Error())
	}
	old.Disconnect(100)

	addr := n.MQTTURL[len("tcp://"):]
	// Refused at CONNECT: the wrong audience, the wrong user name, an
	// expired token, alg none; nothing is created.
	for name, c := range map[string]struct{ user, token string }{
		"wrong aud":  {"erin", op.Token(idptest.Claims{"sub": "e-1", "preferred_username": "erin", "aud": "other"})},
		"expired":    {"erin", op.Token(idptest.Claims{"sub": "e-1", "preferred_username": "erin", "exp": time.Now().Add(-time.Hour).Unix()})},
		"alg none":   {"erin", op.UnsignedToken(idptest.Claims{"sub": "e-1", "preferred_username": "erin"})},
		"wrong iss":  {"erin", op.Token(idptest.Claims{"sub": "e-1", "preferred_username": "erin", "iss": "https://127.0.0.2/"})},
		"other user": {"bob", tok},
	} {
		if code := connack(t, addr, c.user+"/d", c.user, c.token); code != 0x86 {
			t.Errorf("%s: CONNACK %#x, want 0x86", name, code)
		}
	}
	if c := accounts(t, n); c != 2 {
		t.Fatalf("%d accounts, want 2 (bob, dana)", c)
	}
	// A password user is untouched by all this.
	if code := connack(t, addr, "bob/tablet", "bob", bobTok); code != 0 {
		t.Fatalf("bob's edgechat token: CONNACK %#x", code)
	}
}

// Signing out everywhere ends a session that CONNECTs with its
// provider's token too: the live connection is closed, the same token is
// refused at the next CONNECT, and a token the provider issues after the
// sign-out connects.
func TestOIDCConnectAfterSignOutEverywhere(t *testing.T) {
	op := idptest.Start(t)
	n := nodetest.StartNode(t, withOIDC(op))
	addr := n.MQTTURL[len("tcp://"):]
	old := op.Token(idptest.Claims{"sub": "g-1", "preferred_username": "gina", "iat": time.Now().Add(-5 * time.Second).Unix()})
	phone := mustConnectV5(t, addr, "gina", "phone", old)
	status, got := exchange(t, n, "corp", old)
	if status != http.StatusOK || got.UserID != "gina" {
		t.Fatalf("exchange: %d %+v", status, got)
	}
	if st := api(t, n, got.AccessToken, http.MethodPost, "/auth/logout-all", map[string]any{}, nil); st != http.StatusOK {
		t.Fatalf("POST /auth/logout-all: %d", st)
	}
	nodetest.CheckFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		if _, ok := phone.ServerDisconnect(); !ok {
			return errors.New("the session made with the provider's token is still open")
		}
		return nil
	})
	if code := connack(t, addr, "gina/phone", "gina", old); code != 0x86 {
		t.Fatalf("CONNECT with the provider's token of before the sign-out: CONNACK %#x, want 0x86", code)
	}
	fresh := op.Token(idptest.Claims{"sub": "g-1", "preferred_username": "gina", "iat": time.Now().Add(2 * time.Second).Unix()})
	if code := connack(t, addr, "gina/phone", "gina", fresh); code != 0 {
		t.Fatalf("CONNECT with a token issued after the sign-out: CONNACK %#x", code)
	}
}

func TestOIDCFirstConnectCreatesTheAccount(t *testing.T) {
	op := idptest.Start(t)
	n := nodetest.StartNode(t, withOIDC(op))
	tok := op.Token(idptest.Claims{"sub": "f-1", "preferred_username": "frank"})
	c := mqtttest.MustDial(t, n.MQTTURL[len("tcp://"):], mqtttest.Options{ClientID: "frank/d1", Username: "frank", Password: tok})
	c.MustSub(t, "user/frank/newMessage")
	status, got := exchange(t, n, "corp", tok)
	if status != 200 || got.UserID != "frank" || accounts(t, n) != 1 {
		t.Fatalf("exchange after CONNECT: %d %+v, %d accounts", status, got, accounts(t, n))
	}
}

func TestOIDCProviderDownDoesNotStopTheNode(t *testing.T) {
	op := idptest.Start(t)
	op.SetDown(true)
	n := nodetest.StartNode(t, withOIDC(op)) // starts although discovery fails
	bobTok := n.NewUser(t, "bob")
	if code := connack(t, n.MQTTURL[len("tcp://"):], "bob/d", "bob", bobTok); code != 0 {
		t.Fatalf("edgechat token while the provider is down: CONNACK %#x", code)
	}
	tok := op.Token(idptest.Claims{"sub": "g-1", "preferred_username": "gina"})
	if status, got := exchange(t, n, "corp", tok); status != http.StatusServiceUnavailable || got.Error.Code != idp.CodeProviderUnavailable {
		t.Fatalf("exchange while the provider is down: %d %+v", status, got)
	}
	// Not "bad user name or password", which tells many MQTT libraries
	// to stop reconnecting and ask the user: "server unavailable".
	if code := connack(t, n.MQTTURL[len("tcp://"):], "gina/d", "gina", tok); code != 0x88 {
		t.Fatalf("CONNECT with the provider's token while it is down: CONNACK %#x, want 0x88", code)
	}
	op.SetDown(false)
	checkFor(t, 30*time.Second, 250*time.Millisecond, func() error {
		if status, got := exchange(t, n, "corp", tok); status != http.StatusOK || got.UserID != "gina" {
			return fmt.Errorf("exchange once the provider is back: %d %+v", status, got)
		}
		return nil
	})
}

func TestOIDCConcurrentFirstSignInOnTwoNodesMakesOneAccount(t *testing.T) {
	op := idptest.Start(t)
	nodes := nodetest.StartCluster(t, 2, withOIDC(op))
	tok := op.Token(idptest.Claims{"sub": "h-1", "preferred_username": "hana"})
	const per = 4
	var wg sync.WaitGroup
	ids := make(chan string, 2*per)
	for _, n := range nodes {
		for range per {
			wg.Add(1)
			go func() {
				defer wg.Done()
				status, got := exchange(t, n, "corp", tok)
				if status != http.StatusOK {
					t.Errorf("exchange on %s: %d %+v", n.Config.NodeID, status, got)
				}
				ids <- got.UserID
			}()
		}
	}
	wg.Wait()
	close(ids)
	for id := range ids {
		if id != "hana" {
			t.Fatalf("a concurrent first sign-in got user %q, want hana", id)
		}
	}
	for _, n := range nodes {
		checkFor(t, 10*time.Second, 50*time.Millisecond, func() error {
			if c := accounts(t, n); c != 1 {
				return fmt.Errorf("%s: %d accounts, want 1", n.Config.NodeID, c)
			}
			return nil
		})
		links, err := n.Auth.Identities("hana")
		if err != nil || len(links) != 1 {
			t.Fatalf("%s: links %+v %v", n.Config.NodeID, links, err)
		}
	}

	// The code flow started on one node finishes on the other (the
	// pending login is replicated); its state is spent cluster-wide.
	op.NextLogin(idptest.Claims{"sub": "h-1"})
	b := browser(t, op, isCallback)
	resp, _ := browse(t, b, nodes[0].HTTPURL+"/auth/oidc/corp/start")
	cb, err := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusFound || err != nil || !isCallback(cb) {
		t.Fatalf("start on n1: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	cookies := b.Jar.Cookies(cb)
	other, _ := url.Parse(nodes[1].HTTPURL)
	cb.Host = other.Host
	if resp, got := browse(t, b, cb.String()); resp.StatusCode != 200 || got.UserID != "hana" {
		t.Fatalf("callback on n2: %d %+v", resp.StatusCode, got)
	}
	replay := browser(t, op, nil)
	cb.Host = nodes[0].HTTPURL[len("http://"):]
	replay.Jar.SetCookies(cb, cookies)
	if resp, got := browse(t, replay, cb.String()); resp.StatusCode != 400 || got.Error.Code != idp.CodeInvalidState {
		t.Fatalf("replay on n1 of a state spent on n2: %d %+v", resp.StatusCode, got)
	}
}

func TestPasswordLoginOff(t *testing.T) {
	op := idptest.Start(t)
	n := nodetest.StartNode(t, withOIDC(op), nodetest.WithConfig(func(c *node.Config) { c.PasswordLogin = false }))
	var out loginAnswer
	if st := api(t, n, "", http.MethodPost, "/auth/register", map[string]string{"username": "ivan", "password": "password-ivan"}, &out); st != 403 || out.Error.Code != "password_login_disabled" {
		t.Fatalf("register: %d %+v", st, out)
	}
	if st := api(t, n, "", http.MethodPost, "/auth/login", map[string]string{"username": "ivan", "password": "password-ivan"}, &out); st != 403 || out.Error.Code != "password_login_disabled" {
		t.Fatalf("login: %d %+v", st, out)
	}
	if status, got := exchange(t, n, "corp", op.Token(idptest.Claims{"sub": "i-1", "preferred_username": "ivan"})); status != 200 || got.UserID != "ivan" {
		t.Fatalf("OIDC sign-in with passwords off: %d %+v", status, got)
	}
}

// browser is an HTTP client with a cookie jar that trusts op; stop, when
// not nil, ends the redirects before a request it matches (the response
// that pointed there is returned).
func browser(t *testing.T, op *idptest.Provider, stop func(*url.URL) bool) *http.Client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Jar: jar, Transport: op.Client().Transport, Timeout: 15 * time.Second,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if stop != nil && stop(req.URL) {
				return http.ErrUseLastResponse
			}
			if len(via) > 10 {
				return errors.New("too many redirects")
			}
			return nil
		}}
}

func browse(t *testing.T, c *http.Client, u string) (*http.Response, loginAnswer) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out loginAnswer
	b, _ := io.ReadAll(resp.Body)
	if len(b) > 0 && resp.Header.Get("Content-Type") == "application/json" {
		if err := json.Unmarshal(b, &out); err != nil {
			t.Fatalf("GET %s: %d %s: %v", u, resp.StatusCode, b, err)
		}
	}
	return resp, out
}

func isCallback(u *url.URL) bool { return strings.HasSuffix(u.Path, "/callback") }

func TestOIDCCodeFlow(t *testing.T) {
	op := idptest.Start(t)
	n := nodetest.StartNode(t, withOIDC(op))
	start := n.HTTPURL + "/auth/oidc/corp/start"

	// End to end, following every redirect: tokens as JSON.
	op.NextLogin(idptest.Claims{"sub": "k-1", "preferred_username": "kim", "name": "Kim"})
	resp, got := browse(t, browser(t, op, nil), start)
	if resp.StatusCode != 200 || got.UserID != "kim" || got.AccessToken == "" || got.RefreshToken == "" {
		t.Fatalf("code flow: %d %+v", resp.StatusCode, got)
	}
	if p, err := n.Auth.VerifyAccessToken(got.AccessToken); err != nil || p.UserID != "kim" {
		t.Fatalf("token of the code flow: %+v %v", p, err)
	}

	// With an allowed redirect: the app gets the tokens in the fragment.
	resp, _ = browse(t, browser(t, op, func(u *url.URL) bool { return u.Host == "app.example" }), start+"?redirect="+url.QueryEscape(appRedirect))
	loc, err := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusFound || err != nil || loc.Scheme+"://"+loc.Host+loc.Path != appRedirect {
		t.Fatalf("redirect to the app: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	frag, _ := url.ParseQuery(loc.Fragment)
	if frag.Get("user_id") != "kim" || frag.Get("access_token") == "" || frag.Get("refresh_token") == "" {
		t.Fatalf("fragment %v", frag)
	}

	// A browser session (the web client): the refresh token goes into the
	// HttpOnly session cookie and no token into the URL; the page
	// refreshes with the cookie.
	sb := browser(t, op, func(u *url.URL) bool { return u.Host == "app.example" })
	resp, _ = browse(t, sb, start+"?session=cookie&redirect="+url.QueryEscape(appRedirect))
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != appRedirect {
		t.Fatalf("session login: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	refreshReq, _ := http.NewRequest(http.MethodPost, n.HTTPURL+"/auth/refresh", strings.NewReader(`{"session":"cookie"}`))
	refreshReq.Header.Set("Content-Type", "application/json")
	rr, err := sb.Do(refreshReq)
	if err != nil {
		t.Fatal(err)
	}
	var refreshed loginAnswer
	_ = json.NewDecoder(rr.Body).Decode(&refreshed)
	rr.Body.Close()
	if rr.StatusCode != 200 || refreshed.UserID != "kim" || refreshed.AccessToken == "" || refreshed.RefreshToken != "" {
		t.Fatalf("refresh with the session cookie: %d %+v", rr.StatusCode, refreshed)
	}

	// The node's own web app ("/") needs no allow-list entry with a
	// cookie session (nothing but the cookie is handed over), and is an
	// ordinary redirect without one.
	own := browser(t, op, func(u *url.URL) bool { return u.Path == "/" })
	if resp, _ := browse(t, own, start+"?session=cookie&redirect=%2F"); resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/" {
		t.Fatalf("web app sign-in: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	if resp, out := browse(t, browser(t, op, nil), start+"?redirect=%2F"); resp.StatusCode != 400 || out.Error.Code != idp.CodeRedirectNotAllowed {
		t.Fatalf(`redirect "/" without a cookie session: %d %+v`, resp.StatusCode, out)
	}

	// A redirect outside the allow-list is refused before the provider is asked.
	if resp, out := browse(t, browser(t, op, nil), start+"?redirect="+url.QueryEscape("https://evil.example/steal")); resp.StatusCode != 400 || out.Error.Code != idp.CodeRedirectNotAllowed {
		t.Fatalf("evil redirect: %d %+v", resp.StatusCode, out)
	}

	// A replayed state: the callback works once.
	op.NextLogin(idptest.Claims{"sub": "l-1", "preferred_username": "lee"})
	b := browser(t, op, isCallback)
	resp, _ = browse(t, b, start)
	callback := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusFound || !strings.Contains(callback, "/callback?") {
		t.Fatalf("stopped before the callback: %d %q", resp.StatusCode, callback)
	}
	// Another browser cannot use it (the state is bound by a cookie) ...
	if resp, out := browse(t, browser(t, op, nil), callback); resp.StatusCode != 400 || out.Error.Code != idp.CodeInvalidState {
		t.Fatalf("callback from another browser: %d %+v", resp.StatusCode, out)
	}
	// ... its own browser can, once.
	cbURL, _ := url.Parse(callback)
	cookies := b.Jar.Cookies(cbURL)
	if len(cookies) != 1 {
		t.Fatalf("state cookies %v", cookies)
	}
	if resp, out := browse(t, b, callback); resp.StatusCode != 200 || out.UserID != "lee" {
		t.Fatalf("callback: %d %+v", resp.StatusCode, out)
	}
	before := accounts(t, n)
	// A replay with the state cookie (a copy of the whole request): the
	// state was spent in the log.
	replay := browser(t, op, nil)
	replay.Jar.SetCookies(cbURL, cookies)
	if resp, out := browse(t, replay, callback); resp.StatusCode != 400 || out.Error.Code != idp.CodeInvalidState {
		t.Fatalf("replayed callback: %d %+v", resp.StatusCode, out)
	}

	// A bad nonce in the ID token: refused, nothing created.
	op.SetBadNonce(true)
	op.NextLogin(idptest.Claims{"sub": "m-1", "preferred_username": "max"})
	if resp, out := browse(t, browser(t, op, nil), start); resp.StatusCode != 401 || out.Error.Code != idp.CodeInvalidSubjectToken || !strings.Contains(resp.Status, "401") {
		t.Fatalf("bad nonce: %d %+v", resp.StatusCode, out)
	}
	if c := accounts(t, n); c != before {
		t.Fatalf("%d accounts after a replay and a bad nonce, want %d", c, before)
	}
}

func TestOIDCIdentityLinks(t *testing.T) {
	op := idptest.Start(t)
	n := nodetest.StartNode(t, withOIDC(op))
	bobTok, carolTok := n.NewUser(t, "bob"), n.NewUser(t, "carol")
	type list struct {
		Identities []struct {
			Provider, Issuer, Subject string
		} `json:"identities"`
		Password bool                  `json:"password"`
		Error    struct{ Code string } `json:"error"`
	}
	corpTok := op.Token(idptest.Claims{"sub": "n-1", "preferred_username": "robert"})
	var l list
	// An access token alone does not link: whoever stole one could link
	// their own provider account and prove themselves with it from then
	// on (to change the password or delete the account).
	var e list
	if st := api(t, n, bobTok, http.MethodPost, "/user/me/identities", map[string]string{"provider": "corp", "subjectToken": corpTok}, &e); st != 400 || e.Error.Code != httpapi.CodeValidation {
		t.Fatalf("link without a proof: %d %+v", st, e)
	}
	if st := api(t, n, bobTok, http.MethodPost, "/user/me/identities", map[string]string{"provider": "corp", "subjectToken": corpTok, "currentPassword": "not-bobs-password"}, &e); st != 403 || e.Error.Code != httpapi.CodeForbidden {
		t.Fatalf("link with a wrong password: %d %+v", st, e)
	}
	if st := api(t, n, bobTok, http.MethodGet, "/user/me/identities", nil, &l); st != 200 || len(l.Identities) != 0 {
		t.Fatalf("linked without a proof: %d %+v", st, l)
	}
	if st := api(t, n, bobTok, http.MethodPost, "/user/me/identities", map[string]string{"provider": "corp", "subjectToken": corpTok, "currentPassword": nodetest.Password("bob")}, &l); st != 200 ||
		len(l.Identities) != 1 || l.Identities[0].Subject != "n-1" || l.Identities[0].Provider != "corp" || !l.Password {
		t.Fatalf("link: %d %+v", st, l)
	}
	// Signing in with the provider now reaches bob, not a new account.
	if status, got := exchange(t, n, "corp", corpTok); status != 200 || got.UserID != "bob" {
		t.Fatalf("exchange after linking: %d %+v", status, got)
	}
	// Nobody else can take that provider account.
	carolPw := nodetest.Password("carol")
	if st := api(t, n, carolTok, http.MethodPost, "/user/me/identities", map[string]string{"provider": "corp", "subjectToken": corpTok, "currentPassword": carolPw}, &e); st != 409 || e.Error.Code != idp.CodeIdentityTaken {
		t.Fatalf("carol links bob's: %d %+v", st, e)
	}
	// Linking needs a valid token of a known provider.
	if st := api(t, n, carolTok, http.MethodPost, "/user/me/identities", map[string]string{"provider": "corp", "subjectToken": op.Token(idptest.Claims{"sub": "c", "aud": "x"}), "currentPassword": carolPw}, &e); st != 401 || e.Error.Code != idp.CodeInvalidSubjectToken {
		t.Fatalf("link with a bad token: %d %+v", st, e)
	}
	if st := api(t, n, carolTok, http.MethodPost, "/user/me/identities", map[string]string{"provider": "nope", "subjectToken": corpTok, "currentPassword": carolPw}, &e); st != 404 || e.Error.Code != idp.CodeUnknownProvider {
		t.Fatalf("link with an unknown provider: %d %+v", st, e)
	}
	if st := api(t, n, "", http.MethodGet, "/user/me/identities", nil, &e); st != 401 {
		t.Fatalf("list without a token: %d", st)
	}
	// Bob has a password: he may unlink.
	if st := api(t, n, bobTok, http.MethodDelete, "/user/me/identities/corp", nil, nil); st != 204 {
		t.Fatalf("unlink: %d", st)
	}
	if st := api(t, n, bobTok, http.MethodGet, "/user/me/identities", nil, &l); st != 200 || len(l.Identities) != 0 {
		t.Fatalf("after unlink: %d %+v", st, l)
	}
	if st := api(t, n, bobTok, http.MethodDelete, "/user/me/identities/corp", nil, &e); st != 404 {
		t.Fatalf("unlink twice: %d %+v", st, e)
	}
	// A provider-only account cannot remove its only way in.
	_, dana := exchange(t, n, "corp", op.Token(idptest.Claims{"sub": "d-1", "preferred_username": "dana"}))
	if st := api(t, n, dana.AccessToken, http.MethodGet, "/user/me/identities", nil, &l); st != 200 || len(l.Identities) != 1 || l.Password {
		t.Fatalf("dana's identities: %d %+v", st, l)
	}
	if st := api(t, n, dana.AccessToken, http.MethodDelete, "/user/me/identities/corp", nil, &e); st != 409 || e.Error.Code != idp.CodeLastSignIn {
		t.Fatalf("dana unlinks her only way in: %d %+v", st, e)
	}
	if status, got := exchange(t, n, "corp", op.Token(idptest.Claims{"sub": "d-1"})); status != 200 || got.UserID != "dana" {
		t.Fatalf("dana still signs in: %d %+v", status, got)
	}
}

func TestOIDCAccountDeletesItselfWithAProviderToken(t *testing.T) {
	op := idptest.Start(t)
	n := nodetest.StartNode(t, withOIDC(op), nodetest.WithConfig(func(c *node.Config) { c.AccountDeleteGrace = 0 }))
	_, olga := exchange(t, n, "corp", op.Token(idptest.Claims{"sub": "o-1", "preferred_username": "olga"}))
	_, paul := exchange(t, n, "corp", op.Token(idptest.Claims{"sub": "p-1", "preferred_username": "paul"}))
	var e loginAnswer
	// No password to give; another user's provider token does not do.
	if st := api(t, n, olga.AccessToken, http.MethodDelete, "/user/me", map[string]string{"password": ""}, &e); st != 403 {
		t.Fatalf("delete with an empty password: %d %+v", st, e)
	}
	if st := api(t, n, olga.AccessToken, http.MethodDelete, "/user/me", map[string]string{"provider": "corp", "subjectToken": op.Token(idptest.Claims{"sub": "p-1"})}, &e); st != 403 {
		t.Fatalf("delete with paul's provider token: %d %+v", st, e)
	}
	if st := api(t, n, olga.AccessToken, http.MethodDelete, "/user/me", map[string]string{"provider": "corp", "subjectToken": op.Token(idptest.Claims{"sub": "o-1", "aud": "x"})}, &e); st != 403 {
		t.Fatalf("delete with a bad token: %d %+v", st, e)
	}
	var res struct{ UserID string }
	if st := api(t, n, olga.AccessToken, http.MethodDelete, "/user/me", map[string]string{"provider": "corp", "subjectToken": op.Token(idptest.Claims{"sub": "o-1"})}, &res); st != 202 || res.UserID != "olga" {
		t.Fatalf("delete with her own provider token: %d %+v", st, res)
	}
	if _, err := n.Auth.VerifyAccessToken(paul.AccessToken); err != nil {
		t.Fatalf("paul is untouched: %v", err)
	}
	if _, err := n.Auth.VerifyAccessToken(olga.AccessToken); err == nil {
		t.Fatal("olga's token still verifies")
	}
}
