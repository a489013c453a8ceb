package auth

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// A page's sign-out that crosses a refresh of the same browser session
// (another tab's, or this tab's own, in flight when the user clicked
// Sign out) carries the cookie the refresh is spending: the sign-out
// must end the session all the same. Before, it was refused 401 (not
// the family's newest token) and cleared the cookie, and the refresh's
// answer, arriving after it, put a live cookie back: the page showed
// the user signed out, and the next reload (the next person at a shared
// computer) signed them in again.
func TestSignOutCrossingARefreshEndsTheSession(t *testing.T) {
	e := newEnv(t)
	e.register("alice", "password1")
	srv, jar, c := e.browser(t)
	authURL, _ := url.Parse(srv.URL + "/auth/")
	send := func(path, cookie string) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, srv.URL+path, strings.NewReader(`{}`))
		req.Header.Set("Content-Type", "application/json")
		cl := c
		if cookie != "" { // the request that left with the cookie of then
			req.AddCookie(&http.Cookie{Name: SessionCookie, Value: cookie})
			cl = http.DefaultClient
		}
		res, err := cl.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		return res.StatusCode
	}
	res, err := c.Post(srv.URL+"/auth/login", "application/json",
		strings.NewReader(`{"username":"alice","password":"password1","session":"cookie"}`))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK || len(jar.Cookies(authURL)) != 1 {
		t.Fatalf("login: %d, cookies %v", res.StatusCode, jar.Cookies(authURL))
	}
	before := jar.Cookies(authURL)[0].Value

	// The refresh is handled first; its answer (the new cookie) reaches
	// the browser after the sign-out's.
	if code := send("/auth/refresh", ""); code != http.StatusOK {
		t.Fatalf("refresh: %d", code)
	}
	if code := send("/auth/logout", before); code != http.StatusNoContent {
		t.Fatalf("sign-out with the cookie the refresh spent: %d, want 204", code)
	}
	if code := send("/auth/refresh", ""); code != http.StatusUnauthorized {
		t.Fatalf("a reload after the sign-out, with the cookie the refresh set: %d, want 401 (the session ended)", code)
	}
	// A token older than the one the last refresh spent is still
	// refused, and ends nothing.
	tk := e.login("alice", "password1")
	mid, err := e.svc.Refresh(t.Context(), tk.RefreshToken)
	if err != nil {
		t.Fatal(err)
	}
	last, err := e.svc.Refresh(t.Context(), mid.RefreshToken)
	if err != nil {
		t.Fatal(err)
	}
	if r := e.post("/auth/logout", map[string]string{"refreshToken": tk.RefreshToken}); r.Code != http.StatusUnauthorized {
		t.Fatalf("a sign-out with a token two refreshes old: %d, want 401", r.Code)
	}
	if _, err := e.svc.Refresh(t.Context(), last.RefreshToken); err != nil {
		t.Fatalf("the session after a refused sign-out: %v", err)
	}
}
