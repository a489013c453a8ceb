package auth

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/edgechat/edgechat/cluster/fsm/fsmtest"
)

// A browser session survives a moment in which the cluster cannot
// commit (a leader election): its refresh answers 503 and keeps the
// session cookie, and the page refreshes once the cluster is back.
// Before, every failed refresh cleared the cookie, so a few seconds
// without a leader signed every open web page out for good, although
// their sessions were live.
func TestCookieSessionSurvivesAnOutage(t *testing.T) {
	e, srv, jar, post := signedInBrowser(t)
	authURL, _ := url.Parse(srv.URL + "/auth/refresh")
	e.prop.SetErr(fsmtest.ErrDown)
	if code := post("/auth/refresh", `{}`); code != http.StatusServiceUnavailable {
		t.Fatalf("refresh without quorum: %d", code)
	}
	if len(jar.Cookies(authURL)) != 1 {
		t.Fatal("a refresh the cluster could not commit cleared the session cookie")
	}
	e.prop.SetErr(nil)
	if code := post("/auth/refresh", `{}`); code != http.StatusOK {
		t.Fatalf("refresh once the cluster is back: %d", code)
	}
	// A refused cookie is still cleared (TestCookieSession).
}

// A sign-out the cluster could not commit keeps the cookie too: the
// session is still live, and the page's retry (the web client says
// "you are still signed in; try again") must be able to end it. Before,
// the cookie was cleared first, the retry found no cookie (401, taken
// for "no session left") and the session lived on, unreachable from
// the browser, until its refresh token expired.
func TestCookieSignOutSurvivesAnOutage(t *testing.T) {
	e, srv, jar, post := signedInBrowser(t)
	authURL, _ := url.Parse(srv.URL + "/auth/logout")
	e.prop.SetErr(fsmtest.ErrDown)
	if code := post("/auth/logout", `{}`); code != http.StatusServiceUnavailable {
		t.Fatalf("logout without quorum: %d", code)
	}
	if len(jar.Cookies(authURL)) != 1 {
		t.Fatal("a sign-out the cluster could not commit cleared the session cookie")
	}
	e.prop.SetErr(nil)
	if code := post("/auth/logout", `{}`); code != http.StatusNoContent {
		t.Fatalf("logout once the cluster is back: %d", code)
	}
	if len(jar.Cookies(authURL)) != 0 {
		t.Fatal("the cookie outlived the sign-out")
	}
	sessions, err := e.svc.Sessions("alice", "")
	if err != nil || len(sessions) != 0 {
		t.Fatalf("sessions after the sign-out: %+v %v", sessions, err)
	}
}

// signedInBrowser is a browser (a cookie jar over real HTTP) in which
// alice signed in with a cookie session; post answers a JSON POST's
// status.
func signedInBrowser(t *testing.T) (*env, *httptest.Server, http.CookieJar, func(path, body string) int) {
	t.Helper()
	e := newEnv(t)
	e.register("alice", "password1")
	srv, jar, c := e.browser(t)
	post := func(path, body string) int {
		t.Helper()
		res, err := c.Post(srv.URL+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	if code := post("/auth/login", `{"username":"alice","password":"password1","session":"cookie"}`); code != http.StatusOK {
		t.Fatalf("login: %d", code)
	}
	return e, srv, jar, post
}
