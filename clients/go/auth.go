package edgechat

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"
)

// Login exchanges a username and password for tokens. It sends the
// request with a fresh Idempotency-Key and, when it gets no answer (the
// connection dropped after the request went out) or a 502, 503 or 504,
// sends it again with the same key, up to loginAttempts times in all
// while ctx lasts: a sign-in whose answer was lost is answered as the
// retry it is, with the tokens of the one session it made, not a second
// session.
func Login(ctx context.Context, httpURL, username, password string) (Tokens, error) {
	return login(ctx, httpURL, map[string]string{"username": username, "password": password})
}

// LoginDevice is Login by a named device (the {deviceID} of the
// client's MQTT client ID, as Options.Device): the user's session list
// shows it.
func LoginDevice(ctx context.Context, httpURL, username, password, device string) (Tokens, error) {
	return login(ctx, httpURL, map[string]string{"username": username, "password": password, "device": device})
}

// loginAttempts bounds how often Login sends one sign-in; loginRetryDelay
// is the wait before the second attempt, doubled for each further one.
const (
	loginAttempts   = 3
	loginRetryDelay = 250 * time.Millisecond
)

func login(ctx context.Context, httpURL string, body map[string]string) (Tokens, error) {
	ctx = withIdempotencyKey(ctx, NewIdempotencyKey())
	delay := loginRetryDelay
	for attempt := 1; ; attempt++ {
		t, err := postTokens(ctx, nil, httpURL, "/auth/login", body)
		if err == nil || attempt == loginAttempts || !answerMayComeOnRetry(err) {
			return t, err
		}
		select {
		case <-ctx.Done():
			return Tokens{}, err
		case <-time.After(delay):
		}
		delay *= 2
	}
}

// answerMayComeOnRetry reports whether a request that failed with err is
// worth sending again (with its Idempotency-Key): no answer came, or the
// node answered that it cannot act now.
func answerMayComeOnRetry(err error) bool {
	var ae *APIError
	var ue *url.Error
	if !errors.As(err, &ae) {
		// The transport's errors come as *url.Error (a malformed URL too,
		// as "parse"); an answer that came but did not decode is final.
		return errors.As(err, &ue) && ue.Op != "parse"
	}
	switch ae.Status {
	case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// Refresh exchanges a refresh token for new tokens. Refresh tokens rotate:
// keep the newest one, the old one is no longer valid.
func Refresh(ctx context.Context, httpURL, refreshToken string) (Tokens, error) {
	return postTokens(ctx, nil, httpURL, "/auth/refresh", map[string]string{"refreshToken": refreshToken})
}

// RefreshWithKey is Refresh with an Idempotency-Key: choose a new random
// key for each refresh token and keep it until an answer comes, so that a
// refresh whose answer was lost can be sent again (within a minute) and
// be answered as a retry rather than end the session as a reuse.
func RefreshWithKey(ctx context.Context, httpURL, refreshToken, key string) (Tokens, error) {
	return postTokens(withIdempotencyKey(ctx, key), nil, httpURL, "/auth/refresh", map[string]string{"refreshToken": refreshToken})
}

// NewIdempotencyKey returns a fresh random Idempotency-Key.
func NewIdempotencyKey() string { return "k-" + randomHex(16) }

func postTokens(ctx context.Context, hc *http.Client, httpURL, path string, body any) (Tokens, error) {
	if httpURL == "" {
		return Tokens{}, fmt.Errorf("%w: empty server URL", ErrBadOptions)
	}
	var t Tokens
	start := time.Now()
	if err := doJSON(ctx, hc, http.MethodPost, strings.TrimRight(httpURL, "/")+path, "", body, &t); err != nil {
		return Tokens{}, err
	}
	return checkTokens(t, start)
}

// checkTokens checks an answer with tokens and fills in what it implies
// (UserID from the token, Expiry from ExpiresIn counted from start).
func checkTokens(t Tokens, start time.Time) (Tokens, error) {
	if t.AccessToken == "" {
		return Tokens{}, fmt.Errorf("%w: server returned no access token", ErrBadToken)
	}
	if t.UserID == "" {
		if sub, err := TokenSubject(t.AccessToken); err == nil {
			t.UserID = sub
		}
	}
	if t.ExpiresIn > 0 {
		t.Expiry = start.Add(time.Duration(t.ExpiresIn) * time.Second)
	} else if _, exp, err := parseJWT(t.AccessToken); err == nil {
		t.Expiry = exp
	}
	return t, nil
}

// TokenSubject returns the "sub" claim (the user ID) of a JWT without
// verifying its signature: the client only needs to know who it is, the
// server does the verifying.
func TokenSubject(token string) (string, error) {
	sub, _, err := parseJWT(token)
	return sub, err
}

func parseJWT(token string) (sub string, exp time.Time, err error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return "", time.Time{}, fmt.Errorf("%w: not three dot-separated parts", ErrBadToken)
	}
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return "", time.Time{}, fmt.Errorf("%w: payload is not base64url: %v", ErrBadToken, err)
	}
	var claims struct {
		Sub string  `json:"sub"`
		Exp float64 `json:"exp"`
	}
	if err := json.Unmarshal(raw, &claims); err != nil {
		return "", time.Time{}, fmt.Errorf("%w: payload is not JSON: %v", ErrBadToken, err)
	}
	if claims.Sub == "" {
		return "", time.Time{}, fmt.Errorf("%w: no sub claim", ErrBadToken)
	}
	if claims.Exp > 0 {
		exp = time.Unix(int64(claims.Exp), 0)
	}
	return claims.Sub, exp, nil
}

// TokenSource returns a valid access token; Dial calls it before every
// connection attempt and every HTTP request, so it must be cheap when the
// cached token is still good.
type TokenSource func(ctx context.Context) (string, error)

// RefreshingTokenSource caches t and refreshes it through /auth/refresh
// when the access token is within a minute (or a tenth of its lifetime) of
// expiring. A refresh that fails for now (no answer, 503; not a refusal,
// 401) leaves the access token in use until it expires, as the next
// calls try the refresh again. onRefresh, if not nil, is told every new pair (refresh tokens
// rotate, so a caller that persists them must save each one); it is
// told them in rotation order, outside the token source's lock, so it
// may use the client (or call the token source).
//
// A refresh runs to its end (at most refreshTimeout) even when the
// caller that started it stops waiting: the server may already have
// rotated the token, and presenting the spent one again would sign the
// session out everywhere (refresh_reused). Its result is kept and
// told to onRefresh all the same; concurrent callers share it. Every
// refresh of one token carries the same Idempotency-Key, so one whose
// answer was lost (the connection dropped) may be sent again within a
// minute: the server answers it as a retry.
func RefreshingTokenSource(httpURL string, t Tokens, onRefresh func(Tokens)) TokenSource {
	return RefreshingTokenSourceURLs([]string{httpURL}, t, onRefresh)
}

// RefreshingTokenSourceURLs is RefreshingTokenSource over several nodes'
// APIs (Options.HTTPURLs): a refresh goes to the node that last answered
// and moves to the next when it gets no answer, a 502, 503 or 504 (the
// node, or a gateway in front of it, cannot answer), or when it provably
// never reached it. The node may have rotated the token already; the
// refresh carries the Idempotency-Key of that rotation, which the
// cluster's replicated state decides, so the next node answers it as a
// retry (within a minute of the rotation) rather than as a reuse that
// would revoke the session. Another answer (401, 429, ...) is returned.
func RefreshingTokenSourceURLs(httpURLs []string, t Tokens, onRefresh func(Tokens)) TokenSource {
	var urls []string
	for _, u := range httpURLs {
		if u = strings.TrimRight(u, "/"); u != "" && !slices.Contains(urls, u) {
			urls = append(urls, u)
		}
	}
	ts := &refresher{urls: urls, cur: t, onRefresh: onRefresh, now: time.Now}
	return ts.token
}

// refreshTimeout bounds one refresh, whoever waits for it.
const refreshTimeout = 30 * time.Second

type refresher struct {
	urls      []string
	onRefresh func(Tokens)
	now       func() time.Time

	mu       sync.Mutex
	cur      Tokens
	at       int          // index in urls of the node that last answered
	inflight *refreshCall // the refresh under way, if any
	// key is the Idempotency-Key of every refresh of the refresh token
	// keyFor: a refresh sent again after a lost answer is a retry.
	key, keyFor string
	// told is closed once onRefresh has been told of the newest rotation
	// (nil before the first): the next one waits for it.
	told chan struct{}
}

// refreshCall is one refresh; done is closed once tok or err is set.
type refreshCall struct {
	done chan struct{}
	tok  string
	err  error
}

func (r *refresher) token(ctx context.Context) (string, error) {
	r.mu.Lock()
	if !r.needsRefresh() || r.cur.RefreshToken == "" {
		// Fresh, or nothing to refresh with: let the server judge.
		tok := r.cur.AccessToken
		r.mu.Unlock()
		return tok, nil
	}
	call := r.inflight
	if call == nil {
		call = &refreshCall{done: make(chan struct{})}
		r.inflight = call
		if r.keyFor != r.cur.RefreshToken {
			r.key, r.keyFor = NewIdempotencyKey(), r.cur.RefreshToken
		}
		go r.refresh(withIdempotencyKey(context.WithoutCancel(ctx), r.key), call, r.cur.RefreshToken, r.at)
	}
	r.mu.Unlock()
	select {
	case <-call.done:
		if call.err != nil && !errors.Is(call.err, ErrUnauthorized) {
			// Refreshed early and failed for now (no answer, 503): the
			// access token is still good until it expires; the next
			// call tries again. A refusal (the session ended) is told.
			r.mu.Lock()
			tok, exp := r.cur.AccessToken, r.cur.Expiry
			r.mu.Unlock()
			if tok != "" && !exp.IsZero() && r.now().Before(exp) {
				return tok, nil
			}
		}
		return call.tok, call.err
	case <-ctx.Done():
		return "", fmt.Errorf("edgechat: refresh access token: %w", ctx.Err())
	}
}

// refresh spends rt and installs what the server answers, whether or
// not anyone still waits.
func (r *refresher) refresh(ctx context.Context, call *refreshCall, rt string, at int) {
	ctx, cancel := context.WithTimeout(ctx, refreshTimeout)
	defer cancel()
	start := time.Now()
	var nt Tokens
	err := fmt.Errorf("%w: no server URL", ErrBadOptions)
	if len(r.urls) > 0 {
		// callNodes moves on as for a read: the POST carries the key.
		at, err = callNodes(ctx, nil, r.urls, at, http.MethodPost, "/auth/refresh", "", map[string]string{"refreshToken": rt}, &nt)
	}
	if err == nil {
		nt, err = checkTokens(nt, start)
	}
	r.mu.Lock()
	r.inflight = nil
	if err != nil {
		call.err = fmt.Errorf("edgechat: refresh access token: %w", err)
		r.mu.Unlock()
		close(call.done)
		return
	}
	if nt.RefreshToken == "" {
		nt.RefreshToken = rt
	}
	r.cur, r.at = nt, at
	call.tok = nt.AccessToken
	// onRefresh runs outside mu, as it may use the client (whose calls
	// ask for a token: the new one is in place), but in rotation order,
	// after the previous rotation's, and before the waiting calls get
	// the new token.
	prev, mine := r.told, make(chan struct{})
	r.told = mine
	r.mu.Unlock()
	if prev != nil {
		<-prev
	}
	if r.onRefresh != nil {
		r.onRefresh(nt)
	}
	close(mine)
	close(call.done)
}

func (r *refresher) needsRefresh() bool {
	if r.cur.AccessToken == "" {
		return true
	}
	if r.cur.Expiry.IsZero() {
		return false
	}
	margin := time.Minute
	if r.cur.ExpiresIn > 0 {
		if tenth := time.Duration(r.cur.ExpiresIn) * time.Second / 10; tenth < margin {
			margin = tenth
		}
	}
	return r.now().Add(margin).After(r.cur.Expiry)
}

// ExchangeOIDC exchanges a JWT of one of the server's OpenID Connect
// providers (an ID token, or a JWT access token) for edgechat tokens
// (POST /auth/oidc/{provider}/token); the first sign-in creates the
// account.
func ExchangeOIDC(ctx context.Context, httpURL, provider, subjectToken string) (Tokens, error) {
	return ExchangeOIDCDevice(ctx, httpURL, provider, subjectToken, "")
}

// ExchangeOIDCDevice is ExchangeOIDC by a named device, as LoginDevice
// is Login: device ("" for none) names the session in the session list.
func ExchangeOIDCDevice(ctx context.Context, httpURL, provider, subjectToken, device string) (Tokens, error) {
	body := map[string]string{"subjectToken": subjectToken}
	if device != "" {
		body["device"] = device
	}
	return postTokens(ctx, nil, httpURL, "/auth/oidc/"+url.PathEscape(provider)+"/token", body)
}
