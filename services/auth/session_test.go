package auth

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/edgechat/edgechat/internal/httpapi"
)

// A browser session over real HTTP with a cookie jar: the refresh token
// lives only in the HttpOnly cookie scoped to /auth/, refresh rotates
// it, a spent cookie is refused and cleared, and logout revokes and
// clears it.
func TestCookieSession(t *testing.T) {
	e := newEnv(t)
	e.register("alice", "password1")
	srv, jar, c := e.browser(t)
	post := func(path, body string) (int, Tokens, *http.Response) {
		t.Helper()
		res, err := c.Post(srv.URL+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		var tk Tokens
		_ = json.Unmarshal(b, &tk)
		if strings.Contains(string(b), `"refreshToken"`) {
			t.Fatalf("%s: a cookie session's answer carries the refresh token: %s", path, b)
		}
		return res.StatusCode, tk, res
	}

	code, tk, res := post("/auth/login", `{"username":"alice","password":"password1","session":"cookie"}`)
	if code != http.StatusOK || tk.AccessToken == "" || tk.UserID != "alice" {
		t.Fatalf("login: %d %+v", code, tk)
	}
	var sc *http.Cookie
	for _, ck := range res.Cookies() {
		if ck.Name == SessionCookie {
			sc = ck
		}
	}
	if sc == nil || !sc.HttpOnly || sc.SameSite != http.SameSiteStrictMode || sc.Path != "/auth/" || sc.MaxAge <= 0 || sc.Value == "" {
		t.Fatalf("session cookie: %+v", sc)
	}
	authURL, _ := url.Parse(srv.URL + "/auth/refresh")
	apiURL, _ := url.Parse(srv.URL + "/chat/history")
	if len(jar.Cookies(apiURL)) != 0 || len(jar.Cookies(authURL)) != 1 {
		t.Fatal("the cookie is not scoped to /auth/")
	}
	spent := sc.Value

	// The page reloads: refresh with the cookie alone.
	code, tk2, _ := post("/auth/refresh", `{}`)
	if code != http.StatusOK || tk2.AccessToken == "" {
		t.Fatalf("refresh with the cookie: %d", code)
	}
	if now := jar.Cookies(authURL); len(now) != 1 || now[0].Value == spent {
		t.Fatal("refresh did not rotate the cookie")
	}

	// A stolen, spent cookie value revokes the family (refresh_reused).
	r := e.do(http.MethodPost, "/auth/refresh", `{"refreshToken":"`+spent+`"}`, "192.0.2.1")
	if r.Code != http.StatusUnauthorized || r.errCode() != CodeRefreshReused {
		t.Fatalf("spent token: %d %s", r.Code, r.Body)
	}
	code, _, res = post("/auth/refresh", `{}`)
	if code != http.StatusUnauthorized || len(jar.Cookies(authURL)) != 0 {
		t.Fatalf("refresh of a revoked family: %d, cookie kept: %v", code, jar.Cookies(authURL))
	}

	// Sign in again, sign out: the cookie goes and is revoked.
	if code, _, _ := post("/auth/login", `{"username":"alice","password":"password1","session":"cookie"}`); code != http.StatusOK {
		t.Fatal(code)
	}
	kept := jar.Cookies(authURL)[0].Value
	if code, _, _ := post("/auth/logout", `{}`); code != http.StatusNoContent || len(jar.Cookies(authURL)) != 0 {
		t.Fatalf("logout: %d, cookie %v", code, jar.Cookies(authURL))
	}
	if r := e.do(http.MethodPost, "/auth/refresh", `{"refreshToken":"`+kept+`"}`, "192.0.2.1"); r.Code != http.StatusUnauthorized {
		t.Fatalf("refresh after logout: %d", r.Code)
	}

	// Anything else than "cookie" is refused and signs nobody in.
	if r := e.post("/auth/login", map[string]string{"username": "alice", "password": "password1", "session": "jar"}); r.Code != http.StatusBadRequest || len(r.Header.Values("Set-Cookie")) != 0 {
		t.Fatalf("session jar: %d %s", r.Code, r.Body)
	}
	// Without session, the tokens stay in the body as before.
	if tk := e.login("alice", "password1"); tk.RefreshToken == "" {
		t.Fatal("plain login lost its refresh token")
	}
}

// The endpoints a browser's session cookie works on refuse a body that
// does not say it is JSON, also one with no Content-Type at all, which
// a page of another origin of the same site can send along with the
// SameSite cookie (fetch of a Blob, no-cors): a forged refresh would
// rotate the cookie, a forged login sign the browser into another
// account, a forged logout end the session.
func TestCookieEndpointsTakeOnlyJSON(t *testing.T) {
	e := newEnv(t)
	e.register("alice", "password1")
	srv, jar, c := e.browser(t)
	post := func(path, contentType, body string) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, srv.URL+path, strings.NewReader(body))
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		res, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	authURL, _ := url.Parse(srv.URL + "/auth/refresh")
	cookie := func() string {
		for _, ck := range jar.Cookies(authURL) {
			if ck.Name == SessionCookie {
				return ck.Value
			}
		}
		return ""
	}
	login := `{"username":"alice","password":"password1","session":"cookie"}`
	for _, ct := range []string{"", "text/plain"} {
		if code := post("/auth/login", ct, login); code != http.StatusUnsupportedMediaType || cookie() != "" {
			t.Fatalf("login with Content-Type %q: %d, cookie %q", ct, code, cookie())
		}
	}
	if code := post("/auth/login", "application/json", login); code != http.StatusOK || cookie() == "" {
		t.Fatalf("login: %d", code)
	}
	had := cookie()
	for _, path := range []string{"/auth/refresh", "/auth/logout"} {
		if code := post(path, "", `{}`); code != http.StatusUnsupportedMediaType || cookie() != had {
			t.Fatalf("%s without a Content-Type: %d (the cookie changed: %v)", path, code, cookie() != had)
		}
	}
	if code := post("/auth/register", "", `{"username":"mallory","password":"password2"}`); code != http.StatusUnsupportedMediaType {
		t.Fatalf("register without a Content-Type: %d", code)
	}
	// The session is whole: it refreshes (rotating the cookie) and signs out.
	if code := post("/auth/refresh", "application/json; charset=utf-8", `{}`); code != http.StatusOK || cookie() == had {
		t.Fatalf("refresh: %d", code)
	}
	if code := post("/auth/logout", "application/json", `{}`); code != http.StatusNoContent || cookie() != "" {
		t.Fatalf("logout: %d", code)
	}
}

// The session cookie is Secure when the browser's request came over TLS,
// to the node or to a trusted proxy that terminated it (the gateway marks
// such requests: httpapi.WithSecure); not over plain HTTP.
func TestSessionCookieSecureBehindATLSProxy(t *testing.T) {
	e := newEnv(t)
	e.register("alice", "password1")
	for _, secure := range []bool{false, true} {
		req := httpRequest(http.MethodPost, "/auth/login", `{"username":"alice","password":"password1","session":"cookie"}`, "application/json")
		if secure {
			req = req.WithContext(httpapi.WithSecure(req.Context()))
		}
		rec := serve(e, req)
		var sc *http.Cookie
		for _, ck := range rec.Result().Cookies() {
			if ck.Name == SessionCookie {
				sc = ck
			}
		}
		if rec.Code != http.StatusOK || sc == nil || sc.Secure != secure {
			t.Fatalf("login (request secure %v): %d, cookie %+v", secure, rec.Code, sc)
		}
	}
}
