package auth

import (
	"net/http"
	"time"

	"github.com/edgechat/edgechat/internal/httpapi"
)

// Browser sessions: a web app asks login and refresh for {"session":
// "cookie"} and gets the refresh token as an HttpOnly cookie scoped to the
// auth endpoints instead of in the body, so that script on the page (an
// injected one included) can never read it; the access token stays in
// the page's memory. Refresh and logout take the cookie when the body has
// no refreshToken. SameSite=Strict keeps other sites from sending it, and
// these endpoints only take application/json, which no cross-site form
// can send without a CORS preflight that other origins fail.

// SessionCookie is the name of the refresh-token cookie.
const SessionCookie = "edgechat_refresh"

// sessionCookie is the answer's mode: "" (tokens in the body) or "cookie".
const sessionCookieMode = "cookie"

func validSessionMode(mode string) bool { return mode == "" || mode == sessionCookieMode }

// setSessionCookie moves t's refresh token into the cookie.
func (s *Service) setSessionCookie(w http.ResponseWriter, r *http.Request, t *Tokens) {
	http.SetCookie(w, &http.Cookie{
		Name:     SessionCookie,
		Value:    t.RefreshToken,
		Path:     "/auth/",
		MaxAge:   int(s.cfg.RefreshTTL / time.Second),
		HttpOnly: true,
		Secure:   httpapi.IsSecure(r),
		SameSite: http.SameSiteStrictMode,
	})
	t.RefreshToken = ""
}

func clearSessionCookie(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: "", Path: "/auth/", MaxAge: -1,
		HttpOnly: true, Secure: httpapi.IsSecure(r), SameSite: http.SameSiteStrictMode})
}

// cookieRefreshToken is the session cookie's refresh token, "" if none.
func cookieRefreshToken(r *http.Request) string {
	c, err := r.Cookie(SessionCookie)
	if err != nil {
		return ""
	}
	return c.Value
}

// SetSessionCookie moves t's refresh token into the session cookie (for
// sign-ins answered elsewhere: the OIDC code flow and token exchange).
func (s *Service) SetSessionCookie(w http.ResponseWriter, r *http.Request, t *Tokens) {
	s.setSessionCookie(w, r, t)
}
