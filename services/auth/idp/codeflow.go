package idp

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/dgraph-io/badger/v4"
	"golang.org/x/oauth2"

	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/internal/httpapi"
	"github.com/edgechat/edgechat/internal/wire"
	"github.com/edgechat/edgechat/services/auth"
)

// The browser code flow (authorization code + PKCE):
//
//	GET /auth/oidc/{provider}/start?redirect=URL
//	  → 302 to the provider with state, nonce and an S256 PKCE challenge;
//	    the pending login (nonce, verifier, redirect) is replicated under
//	    sha256(state), so the callback may reach any node, and the state is
//	    bound to the browser by a cookie.
//	GET /auth/oidc/{provider}/callback?code=…&state=…
//	  → the state is spent through the log (a replay finds nothing), the
//	    code exchanged with the verifier, the ID token verified with the
//	    nonce; edgechat's tokens go to the redirect URL's fragment, or are
//	    answered as JSON when the login named no redirect.

// Keys of pending logins (this package's prefix).
const (
	prefixLogin    = "r/oidc/login/" // + hex sha256(state) → pendingLogin
	prefixLoginExp = "r/oidc/lexp/"  // + 8-byte big-endian expiry (unix ms) + hex sha256(state) → ""
)

// Limits of the code flow.
const (
	loginTTL       = 10 * time.Minute
	loginGCPerStep = 32 // expired pending logins removed by each start
	stateCookie    = "edgechat_oidc_state"
	sessionCookie  = "cookie" // the session mode of auth's browser sessions
)

// Errors of the code flow.
var (
	ErrRedirectNotAllowed = errors.New("oidc: redirect not in the provider's allow-list")
	ErrBadState           = errors.New("oidc: unknown, spent or expired login state")
	ErrLoginFailed        = errors.New("oidc: the provider refused the login")
)

// Proposer and Registrar are the Raft log and the FSM (as in package auth).
type Proposer interface {
	Propose(ctx context.Context, t byte, payload []byte) (any, error)
}

// Registrar installs FSM handlers.
type Registrar interface {
	Register(t byte, h fsm.Handler)
}

type pendingLogin struct {
	Provider string    `json:"provider"`
	Nonce    string    `json:"nonce"`
	Verifier string    `json:"verifier"`
	Redirect string    `json:"redirect,omitempty"` // "" answers JSON
	Callback string    `json:"callback"`           // the redirect_uri given to the provider
	Session  bool      `json:"session,omitempty"`  // the refresh token goes into the browser-session cookie
	Expires  time.Time `json:"expires"`
}

type loginCmd struct {
	Op    string        `json:"op"` // "start" or "finish"
	Key   string        `json:"key"`
	Login *pendingLogin `json:"login,omitempty"`
	At    time.Time     `json:"at"`
}

var errBadLoginCmd = errors.New("oidc: malformed login command")

func expKey(exp time.Time, key string) []byte {
	b := make([]byte, 0, len(prefixLoginExp)+8+len(key))
	b = append(b, prefixLoginExp...)
	b = binary.BigEndian.AppendUint64(b, uint64(exp.UnixMilli()))
	return append(b, key...)
}

// applyLogin records a started login (and removes a few expired ones) or
// spends a login's state: only the first finish gets the login.
func applyLogin(tx *badger.Txn, _ fsm.Position, payload []byte) (any, error) {
	var c loginCmd
	if err := json.Unmarshal(payload, &c); err != nil {
		return nil, fmt.Errorf("%w: %v", errBadLoginCmd, err)
	}
	if len(c.Key) != 64 {
		return nil, fmt.Errorf("%w: key", errBadLoginCmd)
	}
	if _, err := hex.DecodeString(c.Key); err != nil {
		return nil, fmt.Errorf("%w: key", errBadLoginCmd)
	}
	switch c.Op {
	case "start":
		if c.Login == nil || c.Login.Expires.IsZero() {
			return nil, fmt.Errorf("%w: no login", errBadLoginCmd)
		}
		if err := gcLogins(tx, c.At); err != nil {
			return nil, err
		}
		if _, err := tx.Get([]byte(prefixLogin + c.Key)); err == nil {
			return nil, fmt.Errorf("%w: state exists", errBadLoginCmd)
		} else if !errors.Is(err, badger.ErrKeyNotFound) {
			return nil, err
		}
		b, err := json.Marshal(c.Login)
		if err != nil {
			return nil, err
		}
		if err := tx.Set([]byte(prefixLogin+c.Key), b); err != nil {
			return nil, err
		}
		return nil, tx.Set(expKey(c.Login.Expires, c.Key), nil)
	case "finish":
		it, err := tx.Get([]byte(prefixLogin + c.Key))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil, ErrBadState
		}
		if err != nil {
			return nil, err
		}
		var l pendingLogin
		if err := it.Value(func(b []byte) error { return json.Unmarshal(b, &l) }); err != nil {
			return nil, err
		}
		if err := tx.Delete([]byte(prefixLogin + c.Key)); err != nil {
			return nil, err
		}
		if err := tx.Delete(expKey(l.Expires, c.Key)); err != nil {
			return nil, err
		}
		if !c.At.Before(l.Expires) {
			return nil, ErrBadState
		}
		return l, nil
	}
	return nil, fmt.Errorf("%w: op %q", errBadLoginCmd, c.Op)
}

// gcLogins removes up to loginGCPerStep logins expired at at, oldest first.
func gcLogins(tx *badger.Txn, at time.Time) error {
	it := tx.NewIterator(badger.IteratorOptions{Prefix: []byte(prefixLoginExp)})
	var dead [][]byte
	for it.Rewind(); it.Valid() && len(dead) < loginGCPerStep; it.Next() {
		k := it.Item().KeyCopy(nil)
		rest := k[len(prefixLoginExp):]
		if len(rest) < 8 || int64(binary.BigEndian.Uint64(rest[:8])) > at.UnixMilli() {
			break
		}
		dead = append(dead, k)
	}
	it.Close()
	for _, k := range dead {
		if err := tx.Delete(k); err != nil {
			return err
		}
		if err := tx.Delete([]byte(prefixLogin + string(k[len(prefixLoginExp)+8:]))); err != nil {
			return err
		}
	}
	return nil
}

func random(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("oidc: random: %v", err))
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

func stateKey(state string) string {
	sum := sha256.Sum256([]byte(state))
	return hex.EncodeToString(sum[:])
}

// callbackURL is where the provider sends the browser back: the
// provider's configured callback_url, else this request's own origin.
func callbackURL(r *http.Request, p *Provider) string {
	if p.cfg.CallbackURL != "" {
		return p.cfg.CallbackURL
	}
	scheme := "http"
	if httpapi.IsSecure(r) {
		scheme = "https"
	}
	return scheme + "://" + r.Host + "/auth/oidc/" + p.cfg.Name + "/callback"
}

func (s *Service) propose(ctx context.Context, c loginCmd) (any, error) {
	b, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("oidc: encode command: %w", err)
	}
	return s.proposer.Propose(ctx, wire.CmdOIDCLogin, b)
}

func (s *Service) oauth2Config(p *Provider, d *discovered, callback string) *oauth2.Config {
	return &oauth2.Config{ClientID: p.cfg.ClientID, ClientSecret: p.secret, Endpoint: d.endpoint,
		RedirectURL: callback, Scopes: p.cfg.Scopes}
}

func (s *Service) handleStart(w http.ResponseWriter, r *http.Request) {
	p, err := s.Provider(r.PathValue("provider"))
	if err != nil {
		httpapi.WriteError(w, httpError(err))
		return
	}
	redirect, session := r.URL.Query().Get("redirect"), r.URL.Query().Get("session")
	if session != "" && session != sessionCookie {
		httpapi.WriteError(w, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeValidation, `session must be "cookie" or absent`))
		return
	}
	// "/" with a cookie session is this node's own web app: the answer
	// carries nothing but the cookie, so it needs no allow-list entry.
	if redirect != "" && !slices.Contains(p.cfg.Redirects, redirect) && (redirect != "/" || session != sessionCookie) {
		httpapi.WriteError(w, httpError(fmt.Errorf("%w: %q", ErrRedirectNotAllowed, redirect)))
		return
	}
	// From here on the redirect is known to be allowed: a failure goes
	// back there, as the callback's do.
	d, err := p.discover(r.Context())
	if err != nil {
		s.writeLoginError(w, r, redirect, err)
		return
	}
	state, nonce, verifier := random(32), random(32), oauth2.GenerateVerifier()
	callback := callbackURL(r, p)
	now := s.now().UTC()
	_, err = s.propose(r.Context(), loginCmd{Op: "start", Key: stateKey(state), At: now, Login: &pendingLogin{
		Provider: p.cfg.Name, Nonce: nonce, Verifier: verifier, Redirect: redirect, Callback: callback, Session: session == sessionCookie,
		Expires: now.Add(loginTTL)}})
	if err != nil {
		s.writeLoginError(w, r, redirect, err)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: stateCookie, Value: state, Path: "/auth/oidc/" + p.cfg.Name + "/",
		MaxAge: int(loginTTL.Seconds()), HttpOnly: true, Secure: httpapi.IsSecure(r), SameSite: http.SameSiteLaxMode})
	s.m.codeFlow.WithLabelValues("started").Inc()
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, s.oauth2Config(p, d, callback).AuthCodeURL(state, oauth2.S256ChallengeOption(verifier), oidc.Nonce(nonce)), http.StatusFound)
}

// writeLoginError answers a code-flow login that failed: the JSON error,
// or, for a login that named its (allowed) redirect, a 302 back there
// with the error's code and message in the fragment and no token.
func (s *Service) writeLoginError(w http.ResponseWriter, r *http.Request, redirect string, err error) {
	if redirect == "" {
		httpapi.WriteError(w, httpError(err))
		return
	}
	code, msg := httpapi.CodeInternal, "internal error"
	var he *httpapi.Error
	if errors.As(httpError(err), &he) {
		code, msg = he.Code, he.Message
	} else {
		s.log.Error("code-flow login failed", "provider", r.PathValue("provider"), "err", err)
	}
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, redirect+"#"+url.Values{"error": {code}, "error_description": {msg}}.Encode(), http.StatusFound)
}

func (s *Service) handleCallback(w http.ResponseWriter, r *http.Request) {
	t, l, err := s.callback(r)
	if err != nil {
		s.m.codeFlow.WithLabelValues("refused").Inc()
		s.log.Debug("code-flow login refused", "provider", r.PathValue("provider"), "err", err)
		// The login is known (its state is spent): the browser goes back
		// to where it was to end, the error in the fragment, as the
		// tokens would have been (a user who cancelled at the provider
		// is back in the app, which says why, not on a JSON page).
		http.SetCookie(w, &http.Cookie{Name: stateCookie, Value: "", Path: "/auth/oidc/" + r.PathValue("provider") + "/", MaxAge: -1})
		s.writeLoginError(w, r, l.Redirect, err)
		return
	}
	s.m.codeFlow.WithLabelValues("ok").Inc()
	w.Header().Set("Cache-Control", "no-store")
	http.SetCookie(w, &http.Cookie{Name: stateCookie, Value: "", Path: "/auth/oidc/" + r.PathValue("provider") + "/", MaxAge: -1})
	if l.Session {
		s.accounts.SetSessionCookie(w, r, &t) // the page refreshes with it
	}
	if l.Redirect == "" {
		httpapi.WriteJSON(w, http.StatusOK, t)
		return
	}
	if l.Session {
		// A browser page: it signs in from the session cookie; no token
		// goes into its URL (or its history).
		http.Redirect(w, r, l.Redirect, http.StatusFound)
		return
	}
	// Tokens travel in the fragment: browsers do not send it to servers.
	frag := url.Values{"access_token": {t.AccessToken}, "expires_in": {strconv.Itoa(t.ExpiresIn)}, "user_id": {t.UserID}}
	if t.RefreshToken != "" {
		frag.Set("refresh_token", t.RefreshToken)
	}
	http.Redirect(w, r, l.Redirect+"#"+frag.Encode(), http.StatusFound)
}

func (s *Service) callback(r *http.Request) (_ authTokens, _ pendingLogin, _ error) {
	p, err := s.Provider(r.PathValue("provider"))
	if err != nil {
		return authTokens{}, pendingLogin{}, err
	}
	q := r.URL.Query()
	state := q.Get("state")
	if state == "" || len(state) > 512 {
		return authTokens{}, pendingLogin{}, fmt.Errorf("%w: no state", ErrBadState)
	}
	if c, err := r.Cookie(stateCookie); err != nil || c.Value != state {
		return authTokens{}, pendingLogin{}, fmt.Errorf("%w: the state is not this browser's", ErrBadState)
	}
	v, err := s.propose(r.Context(), loginCmd{Op: "finish", Key: stateKey(state), At: s.now().UTC()})
	if err != nil {
		if isErr(err, ErrBadState) {
			return authTokens{}, pendingLogin{}, ErrBadState
		}
		return authTokens{}, pendingLogin{}, err
	}
	l, ok := v.(pendingLogin)
	if !ok || l.Provider != p.cfg.Name {
		return authTokens{}, pendingLogin{}, fmt.Errorf("%w: another provider's state", ErrBadState)
	}
	// From here on the login is known: a failure goes back to its
	// redirect (handleCallback).
	if e := q.Get("error"); e != "" {
		return authTokens{}, l, fmt.Errorf("%w: %.100s %.200s", ErrLoginFailed, e, q.Get("error_description"))
	}
	code := q.Get("code")
	if code == "" || len(code) > MaxCallbackQuery { // Entra ID's run past 2,000 characters
		return authTokens{}, l, fmt.Errorf("%w: no code", ErrLoginFailed)
	}
	d, err := p.discover(r.Context())
	if err != nil {
		return authTokens{}, l, err
	}
	ctx := context.WithValue(r.Context(), oauth2.HTTPClient, p.client)
	tok, err := s.oauth2Config(p, d, l.Callback).Exchange(ctx, code, oauth2.VerifierOption(l.Verifier))
	if err != nil {
		return authTokens{}, l, fmt.Errorf("%w: code exchange: %v", ErrLoginFailed, err)
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		return authTokens{}, l, fmt.Errorf("%w: no id_token in the token response", ErrLoginFailed)
	}
	id, err := p.verifyIDToken(r.Context(), raw, l.Nonce)
	if err != nil {
		return authTokens{}, l, err
	}
	t, err := s.accounts.SignInFederated(auth.WithClientInfo(r.Context(), auth.ClientInfoOf(r, "")), toAuth(id))
	return t, l, err
}

// isErr: err is target, also as text from a proposal forwarded to the leader.
func isErr(err, target error) bool {
	return err != nil && (errors.Is(err, target) || strings.Contains(err.Error(), target.Error()))
}

type authTokens = auth.Tokens
