package auth

import (
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/edgechat/edgechat/internal/httpapi"
	"github.com/edgechat/edgechat/internal/wire"
)

// Error codes of this service (besides httpapi's shared codes).
const (
	CodeUsernameTaken      = "username_taken"
	CodeInvalidUsername    = "invalid_username"
	CodeInvalidPassword    = "invalid_password"
	CodeInvalidDisplayName = "invalid_display_name"
	CodeInvalidCredentials = "invalid_credentials"
	CodeRefreshInvalid     = "invalid_refresh_token"
	CodeRefreshReused      = "refresh_reused"
	CodePasswordLoginOff   = "password_login_disabled"
)

// maxAuthBody bounds auth request bodies: they hold a few short strings.
const maxAuthBody = 4 << 10

// maxDeleteBody bounds DELETE /user/me, which may carry a provider's JWT.
const maxDeleteBody = 24 << 10

// Request bodies.
type registerRequest struct {
	Username    string `json:"username"`
	Password    string `json:"password"`
	DisplayName string `json:"displayName,omitempty"`
}

// Session "cookie" puts the refresh token into a cookie (session.go).
type loginRequest struct {
	Username string `json:"username"`
	Password string `json:"password"`
	Session  string `json:"session,omitempty"`
	// Device names the device signing in (the {deviceID} of its MQTT
	// client ID), shown in its session (GET /auth/sessions).
	Device string `json:"device,omitempty"`
}

// refreshRequest: RefreshToken empty takes the session cookie's.
type refreshRequest struct {
	RefreshToken string `json:"refreshToken,omitempty"`
	Session      string `json:"session,omitempty"`
}

// logoutRequest: Device names the device that logs out (the {deviceID}
// of its MQTT client ID), so that its push registration goes too.
type logoutRequest struct {
	RefreshToken string `json:"refreshToken,omitempty"` // empty: the session cookie's
	Device       string `json:"device,omitempty"`
}

// Routes are the service's HTTP endpoints: public ones (no token) and the
// admin look-up of an account that `edgechat token` mints from.
func (s *Service) Routes() []httpapi.Route {
	return []httpapi.Route{
		{Method: http.MethodPost, Pattern: "/auth/register", Handler: s.handleRegister, Public: true, Class: "auth", MaxBody: maxAuthBody},
		{Method: http.MethodPost, Pattern: "/auth/login", Handler: s.handleLogin, Public: true, Class: "auth", MaxBody: maxAuthBody},
		{Method: http.MethodPost, Pattern: "/auth/refresh", Handler: s.handleRefresh, Public: true, Class: "auth", MaxBody: maxAuthBody},
		{Method: http.MethodPost, Pattern: "/auth/logout", Handler: s.handleLogout, Public: true, Class: "auth", MaxBody: maxAuthBody},
		{Method: http.MethodPost, Pattern: "/auth/logout-all", Handler: s.handleLogoutAll, Class: "auth", MaxBody: maxAuthBody},
		{Method: http.MethodGet, Pattern: "/auth/jwks.json", Handler: s.handleJWKS, Public: true, Class: "read"},
		{Method: http.MethodGet, Pattern: "/admin/users/{uid}", Handler: s.handleLookup, Admin: true},
		{Method: http.MethodGet, Pattern: "/admin/users", Handler: s.handleListAccounts, Admin: true, Class: httpapi.ClassAdmin},
		{Method: http.MethodDelete, Pattern: "/user/me", Handler: s.handleDelete, Class: "auth", MaxBody: maxDeleteBody},
		{Method: http.MethodPost, Pattern: "/auth/password", Handler: s.handleChangePassword, Class: "auth", MaxBody: maxDeleteBody},
		{Method: http.MethodGet, Pattern: "/auth/sessions", Handler: s.handleListSessions, Class: "read"},
		{Method: http.MethodDelete, Pattern: "/auth/sessions/{id}", Handler: s.handleEndSession, Class: "auth"},
		{Method: http.MethodGet, Pattern: "/admin/keys", Handler: s.handleListKeys, Admin: true, Class: httpapi.ClassAdmin},
		{Method: http.MethodPost, Pattern: "/admin/keys/rotate", Handler: s.handleRotateKey, Admin: true, Class: httpapi.ClassAdmin},
		{Method: http.MethodPost, Pattern: "/admin/keys/{kid}/revoke", Handler: s.handleRevokeKey, Admin: true, Class: httpapi.ClassAdmin},
		{Method: http.MethodDelete, Pattern: "/admin/users/{uid}", Handler: s.handleAdminDelete, Admin: true, Class: httpapi.ClassAdmin},
		{Method: http.MethodPut, Pattern: "/admin/users/{uid}/suspended", Handler: s.handleSetSuspended, Admin: true, Class: httpapi.ClassAdmin, MaxBody: 1 << 10},
		{Method: http.MethodPut, Pattern: "/admin/users/{uid}/password", Handler: s.handleResetPassword, Admin: true, Class: httpapi.ClassAdmin, MaxBody: maxAuthBody},
	}
}

var errBadSession = httpapi.Errorf(http.StatusBadRequest, httpapi.CodeValidation, `session must be "cookie" or absent`)

// httpError maps the service's errors to HTTP errors with stable codes.
func httpError(err error) error {
	var rl *RateLimitError
	switch {
	case errors.As(err, &rl):
		return &httpapi.Error{Status: http.StatusTooManyRequests, Code: httpapi.CodeRateLimited,
			Message: "too many failed logins; try again later", RetryAfter: rl.RetryAfter}
	case errors.Is(err, ErrSuspended):
		return httpapi.Errorf(http.StatusForbidden, CodeSuspended, "this account is suspended")
	case errors.Is(err, ErrPasswordLoginOff):
		return httpapi.Errorf(http.StatusForbidden, CodePasswordLoginOff, "%v", err)
	case errors.Is(err, ErrUsernameTaken):
		return httpapi.Errorf(http.StatusConflict, CodeUsernameTaken, "username is taken")
	case errors.Is(err, ErrKeyReused):
		return httpapi.KeyReused()
	case errors.Is(err, ErrInvalidUsername):
		return httpapi.Errorf(http.StatusBadRequest, CodeInvalidUsername, "%v", err)
	case errors.Is(err, ErrInvalidPassword):
		return httpapi.Errorf(http.StatusBadRequest, CodeInvalidPassword, "%v", err)
	case errors.Is(err, ErrInvalidDevice):
		return httpapi.Errorf(http.StatusBadRequest, httpapi.CodeValidation, "%v", err)
	case errors.Is(err, ErrInvalidDisplayName):
		return httpapi.Errorf(http.StatusBadRequest, CodeInvalidDisplayName, "%v", err)
	case errors.Is(err, ErrInvalidCredentials):
		return httpapi.Errorf(http.StatusUnauthorized, CodeInvalidCredentials, "invalid username or password")
	case errors.Is(err, ErrRefreshReused):
		return httpapi.Errorf(http.StatusUnauthorized, CodeRefreshReused, "refresh token was already used; sign in again")
	case errors.Is(err, ErrRefreshInvalid):
		return httpapi.Errorf(http.StatusUnauthorized, CodeRefreshInvalid, "refresh token unknown, expired or revoked")
	case errors.Is(err, wire.ErrUnavailable):
		return &httpapi.Error{Status: http.StatusServiceUnavailable, Code: httpapi.CodeUnavailable,
			Message: "cannot commit now; retry", RetryAfter: time.Second}
	}
	return err
}

// decodeRegister, decodeLogin and decodeRefresh are the strict decoders of
// request bodies (fuzzed).
func decodeRegister(body []byte) (registerRequest, error) {
	var req registerRequest
	err := httpapi.DecodeJSONBytes(body, &req)
	return req, err
}

func decodeLogin(body []byte) (loginRequest, error) {
	var req loginRequest
	err := httpapi.DecodeJSONBytes(body, &req)
	return req, err
}

func decodeRefresh(body []byte) (refreshRequest, error) {
	var req refreshRequest
	err := httpapi.DecodeJSONBytes(body, &req)
	return req, err
}

func decodeLogout(body []byte) (logoutRequest, error) {
	var req logoutRequest
	err := httpapi.DecodeJSONBytes(body, &req)
	return req, err
}

func (s *Service) handleRegister(w http.ResponseWriter, r *http.Request) {
	var req registerRequest
	if err := httpapi.DecodeJSONTyped(r, &req, maxAuthBody); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	if s.cfg.NoPasswordLogin {
		httpapi.WriteError(w, httpError(ErrPasswordLoginOff))
		return
	}
	key, err := httpapi.IdempotencyKey(r)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	uid, replay, err := s.createAccountKeyedFrom(r.Context(), req.Username, req.Password, req.DisplayName, key, clientIP(r))
	if err != nil {
		httpapi.WriteError(w, httpError(err))
		return
	}
	status := http.StatusCreated
	if replay {
		status = http.StatusOK // the sign-up sent again: the account it made
	}
	httpapi.WriteJSON(w, status, map[string]string{"userId": uid})
}

// handleLookup answers GET /admin/users/{uid}: {userId, admin}, what an
// access token of the account says, and suspended when it is.
func (s *Service) handleLookup(w http.ResponseWriter, r *http.Request) {
	uid, err := httpapi.AdminUserID(r)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	acct, err := s.LookupAccount(uid)
	if errors.Is(err, ErrNoAccount) {
		httpapi.WriteError(w, httpapi.Errorf(http.StatusNotFound, httpapi.CodeNotFound, "no such user"))
		return
	}
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	if s.suspended.has(acct.UserID) {
		httpapi.WriteJSON(w, http.StatusOK, map[string]any{"userId": acct.UserID, "admin": acct.Admin, "suspended": true})
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, acct)
}

func (s *Service) handleLogin(w http.ResponseWriter, r *http.Request) {
	var req loginRequest
	if err := httpapi.DecodeJSONTyped(r, &req, maxAuthBody); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	if s.cfg.NoPasswordLogin {
		httpapi.WriteError(w, httpError(ErrPasswordLoginOff))
		return
	}
	if !validSessionMode(req.Session) {
		httpapi.WriteError(w, errBadSession)
		return
	}
	if err := ValidDevice(req.Device); err != nil {
		httpapi.WriteError(w, httpError(err))
		return
	}
	key, err := httpapi.IdempotencyKey(r)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	ctx := WithClientInfo(r.Context(), ClientInfoOf(r, req.Device))
	t, err := s.LoginWithKey(ctx, req.Username, req.Password, clientIP(r), key)
	if err != nil {
		httpapi.WriteError(w, httpError(err))
		return
	}
	if req.Session == sessionCookieMode {
		s.setSessionCookie(w, r, &t)
	}
	w.Header().Set("Cache-Control", "no-store")
	httpapi.WriteJSON(w, http.StatusOK, t)
}

func (s *Service) handleRefresh(w http.ResponseWriter, r *http.Request) {
	var req refreshRequest
	if err := httpapi.DecodeJSONTyped(r, &req, maxAuthBody); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	if !validSessionMode(req.Session) {
		httpapi.WriteError(w, errBadSession)
		return
	}
	key, err := httpapi.IdempotencyKey(r)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	fromCookie := req.RefreshToken == ""
	if fromCookie {
		req.RefreshToken = cookieRefreshToken(r)
	}
	if req.RefreshToken == "" {
		httpapi.WriteError(w, errNoRefreshToken)
		return
	}
	t, err := s.RefreshWithKey(r.Context(), req.RefreshToken, key)
	if err != nil {
		if fromCookie && refusesRefresh(err) {
			// Spent or revoked: the page signs in again. Not on a
			// failure to answer (503 while the cluster elects a
			// leader): the session is live, and the page retries.
			clearSessionCookie(w, r)
		}
		httpapi.WriteError(w, httpError(err))
		return
	}
	if fromCookie || req.Session == sessionCookieMode {
		s.setSessionCookie(w, r, &t)
	}
	w.Header().Set("Cache-Control", "no-store")
	httpapi.WriteJSON(w, http.StatusOK, t)
}

func (s *Service) handleLogout(w http.ResponseWriter, r *http.Request) {
	var req logoutRequest
	if err := httpapi.DecodeJSONTyped(r, &req, maxAuthBody); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	fromCookie := req.RefreshToken == ""
	if fromCookie {
		req.RefreshToken = cookieRefreshToken(r)
	}
	if req.RefreshToken == "" {
		httpapi.WriteError(w, errNoRefreshToken)
		return
	}
	err := s.LogoutDevice(r.Context(), req.RefreshToken, req.Device)
	if fromCookie && (err == nil || refusesRefresh(err)) {
		// Kept when the sign-out could not be done (503 while the
		// cluster elects a leader): the session is live, and the
		// page's retry must still be able to end it.
		clearSessionCookie(w, r)
	}
	if err != nil {
		httpapi.WriteError(w, httpError(err))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// errNoRefreshToken answers a refresh or logout that carries no refresh
// token at all, neither in the body nor as the session cookie: the
// same code as an unknown one, but a message that says what is missing.
var errNoRefreshToken = httpapi.Errorf(http.StatusUnauthorized, CodeRefreshInvalid,
	"no refresh token: send refreshToken in the body, or the session cookie of a sign-in with \"session\": \"cookie\"")

// refusesRefresh tells the errors that refuse a refresh token for good
// (unknown, spent, revoked, expired): its session cookie goes. Others (the
// cluster cannot commit now) leave the cookie for a retry.
func refusesRefresh(err error) bool {
	return errors.Is(err, ErrRefreshInvalid) || errors.Is(err, ErrRefreshReused)
}

// handleLogoutAll answers POST /auth/logout-all (with an access token):
// every refresh-token family of the user is revoked, and this browser's
// session cookie cleared. 200 {"revoked": n}.
func (s *Service) handleLogoutAll(w http.ResponseWriter, r *http.Request) {
	p, ok := httpapi.PrincipalFrom(r.Context())
	if !ok || p.UserID == "" {
		httpapi.WriteError(w, httpapi.Errorf(http.StatusUnauthorized, httpapi.CodeUnauthorized, "sign in first"))
		return
	}
	n, err := s.LogoutAll(r.Context(), p.UserID)
	if err != nil {
		httpapi.WriteError(w, httpError(err))
		return
	}
	clearSessionCookie(w, r)
	w.Header().Set("Cache-Control", "no-store")
	httpapi.WriteJSON(w, http.StatusOK, map[string]int{"revoked": n})
}

func (s *Service) handleJWKS(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Cache-Control", "public, max-age=300")
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"keys": s.JWKS()})
}

// clientIP is the host part of RemoteAddr; the gateway, which terminates
// connections, is where a trusted proxy header would be resolved.
func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
