package push

import (
	"bytes"
	"context"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/jwt"
)

// FCM defaults.
const (
	// FCMEndpoint is Google's FCM endpoint.
	FCMEndpoint = "https://fcm.googleapis.com"
	// FCMScope is the OAuth2 scope of the send API.
	FCMScope = "https://www.googleapis.com/auth/firebase.messaging"
	// googleTokenURL is the token endpoint when the service account has
	// no token_uri.
	googleTokenURL = "https://oauth2.googleapis.com/token"
	// fcmTokenEarly is how long before its expiry an access token is
	// replaced.
	fcmTokenEarly = 5 * time.Minute
)

// FCMConfig configures the FCM HTTP v1 provider.
type FCMConfig struct {
	// CredentialsFile is the service-account JSON key from the Firebase
	// console (or CredentialsJSON its contents).
	CredentialsFile string
	CredentialsJSON []byte
	// ProjectID overrides the service account's project_id.
	ProjectID string
	// Endpoint is the FCM base URL: FCMEndpoint when empty; an https URL
	// for tests.
	Endpoint string

	// HTTPClient sends both the token requests and the messages; nil
	// means a client of its own, with TLSConfig when set.
	HTTPClient *http.Client
	TLSConfig  *tls.Config

	// RequestTimeout bounds one send, TokenTimeout one access-token
	// request (DefaultRequestTimeout when zero).
	RequestTimeout time.Duration
	TokenTimeout   time.Duration

	Logger *slog.Logger
}

// serviceAccount is the part of a Google service-account key file FCM
// needs.
type serviceAccount struct {
	Type         string `json:"type"`
	ProjectID    string `json:"project_id"`
	PrivateKeyID string `json:"private_key_id"`
	PrivateKey   string `json:"private_key"`
	ClientEmail  string `json:"client_email"`
	TokenURI     string `json:"token_uri"`
}

// FCMProvider sends through Firebase Cloud Messaging (HTTP v1).
type FCMProvider struct {
	sendURL string
	hc      *http.Client
	tokens  *tokenCache
	timeout time.Duration
	log     *slog.Logger
}

// NewFCM reads the service account and prepares the client; the first
// access token is fetched by the first send.
func NewFCM(cfg FCMConfig) (*FCMProvider, error) {
	raw := cfg.CredentialsJSON
	if len(raw) == 0 {
		if cfg.CredentialsFile == "" {
			return nil, fmt.Errorf("%w: fcm: no service-account credentials", ErrConfig)
		}
		b, err := os.ReadFile(cfg.CredentialsFile)
		if err != nil {
			return nil, fmt.Errorf("%w: fcm: %w", ErrConfig, err)
		}
		raw = b
	}
	var sa serviceAccount
	if err := json.Unmarshal(raw, &sa); err != nil {
		return nil, fmt.Errorf("%w: fcm: service-account JSON: %w", ErrConfig, err)
	}
	if sa.Type != "" && sa.Type != "service_account" {
		return nil, fmt.Errorf("%w: fcm: credentials of type %q, want service_account", ErrConfig, sa.Type)
	}
	if sa.ClientEmail == "" || sa.PrivateKey == "" {
		return nil, fmt.Errorf("%w: fcm: the service account has no client_email or private_key", ErrConfig)
	}
	project := cfg.ProjectID
	if project == "" {
		project = sa.ProjectID
	}
	if project == "" {
		return nil, fmt.Errorf("%w: fcm: no project ID", ErrConfig)
	}
	if sa.TokenURI == "" {
		sa.TokenURI = googleTokenURL
	}
	if u, err := url.Parse(sa.TokenURI); err != nil || u.Scheme != "https" {
		return nil, fmt.Errorf("%w: fcm: token_uri %q is not an https URL", ErrConfig, sa.TokenURI)
	}
	endpoint := cfg.Endpoint
	if endpoint == "" {
		endpoint = FCMEndpoint
	}
	if u, err := url.Parse(endpoint); err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("%w: fcm: endpoint %q is not an https URL", ErrConfig, endpoint)
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = newHTTPClient(cfg.TLSConfig)
	}
	jc := &jwt.Config{
		Email:        sa.ClientEmail,
		PrivateKey:   []byte(sa.PrivateKey),
		PrivateKeyID: sa.PrivateKeyID,
		Scopes:       []string{FCMScope},
		TokenURL:     sa.TokenURI,
	}
	if err := checkRSAKey(jc.PrivateKey); err != nil {
		return nil, fmt.Errorf("%w: fcm: private_key: %w", ErrConfig, err)
	}
	tokTimeout := cfg.TokenTimeout
	if tokTimeout <= 0 {
		tokTimeout = DefaultRequestTimeout
	}
	tc := *hc
	tc.Timeout = tokTimeout
	p := &FCMProvider{
		sendURL: strings.TrimSuffix(endpoint, "/") + "/v1/projects/" + url.PathEscape(project) + "/messages:send",
		hc:      hc,
		tokens:  &tokenCache{conf: jc, client: &tc, early: fcmTokenEarly},
		timeout: cfg.RequestTimeout,
		log:     orDiscard(cfg.Logger),
	}
	p.log.Info("push provider ready", "provider", "fcm", "project", project,
		"endpoint", endpoint, "account", sa.ClientEmail)
	return p, nil
}

// checkRSAKey fails now on a key the token source could not sign with
// (PEM, PKCS #8 or PKCS #1, RSA), rather than at the first send.
func checkRSAKey(b []byte) error {
	block, _ := pem.Decode(b)
	if block == nil {
		return errors.New("not PEM")
	}
	if k, err := x509.ParsePKCS8PrivateKey(block.Bytes); err == nil {
		if _, ok := k.(*rsa.PrivateKey); !ok {
			return fmt.Errorf("a %T, want RSA", k)
		}
		return nil
	}
	if _, err := x509.ParsePKCS1PrivateKey(block.Bytes); err != nil {
		return fmt.Errorf("neither PKCS #8 nor PKCS #1: %w", err)
	}
	return nil
}

// newHTTPClient is a client of our own with tlsCfg (nil: the system's
// roots).
func newHTTPClient(tlsCfg *tls.Config) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if tlsCfg != nil {
		tr.TLSClientConfig = tlsCfg.Clone()
	}
	tr.ForceAttemptHTTP2 = true
	return &http.Client{Transport: tr}
}

// Close closes the idle connections.
func (p *FCMProvider) Close() error {
	p.hc.CloseIdleConnections()
	return nil
}

// Name is "fcm".
func (p *FCMProvider) Name() string { return string(FCM) }

// fcmMessage is the v1 request body.
type fcmMessage struct {
	Message fcmInner `json:"message"`
}

type fcmInner struct {
	Token        string            `json:"token"`
	Notification *fcmNotification  `json:"notification,omitempty"`
	Data         map[string]string `json:"data,omitempty"`
	Android      *fcmAndroid       `json:"android,omitempty"`
	APNs         *fcmAPNs          `json:"apns,omitempty"`
}

type fcmNotification struct {
	Title string `json:"title,omitempty"`
	Body  string `json:"body,omitempty"`
}

type fcmAndroid struct {
	CollapseKey  string               `json:"collapse_key,omitempty"`
	Priority     string               `json:"priority,omitempty"`
	TTL          string               `json:"ttl,omitempty"`
	Notification *fcmAndroidNotifBody `json:"notification,omitempty"`
}

type fcmAndroidNotifBody struct {
	Tag               string `json:"tag,omitempty"`
	Sound             string `json:"sound,omitempty"`
	NotificationCount *int   `json:"notification_count,omitempty"`
}

// fcmAPNs is the APNs part, for iOS apps that receive through FCM.
type fcmAPNs struct {
	Headers map[string]string `json:"headers,omitempty"`
	Payload map[string]any    `json:"payload,omitempty"`
}

// fcmReserved reports a data key FCM refuses.
func fcmReserved(k string) bool {
	switch k {
	case "from", "notification", "message_type", "collapse_key":
		return true
	}
	return strings.HasPrefix(k, "google") || strings.HasPrefix(k, "gcm")
}

// Send posts n to {endpoint}/v1/projects/{project}/messages:send.
func (p *FCMProvider) Send(ctx context.Context, d Device, n Notification) (Result, error) {
	const name = "fcm"
	if d.Platform != FCM {
		return rejectResult(name, fmt.Errorf("%w: platform %q", ErrInvalidDevice, d.Platform))
	}
	if d.Token == "" || len(d.Token) > 4096 {
		return rejectResult(name, fmt.Errorf("%w: FCM token of %d characters", ErrInvalidDevice, len(d.Token)))
	}
	now := time.Now()
	exp, left, ok := ttl(n, now)
	if !ok {
		return rejectResult(name, ErrExpired)
	}
	body, err := json.Marshal(p.message(d, n, exp, left))
	if err != nil {
		return rejectResult(name, err)
	}

	ctx, cancel := withTimeout(ctx, p.timeout)
	defer cancel()
	access, err := p.tokens.get(ctx)
	if err != nil {
		res := tokenErrorResult(err)
		err = errFor(res, name, fmt.Errorf("access token: %w", scrubURL(err)))
		logFailure(p.log, name, d.Token, res, err)
		return res, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.sendURL, bytes.NewReader(body))
	if err != nil {
		return rejectResult(name, err)
	}
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.Header.Set("Authorization", "Bearer "+access)
	resp, err := p.hc.Do(req)
	if err != nil {
		res, err := transportResult(name, err)
		logFailure(p.log, name, d.Token, res, err)
		return res, err
	}
	defer resp.Body.Close()
	answer, rerr := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if rerr != nil {
		res, err := transportResult(name, fmt.Errorf("reading the answer: %w", rerr))
		res.Status = resp.StatusCode
		logFailure(p.log, name, d.Token, res, err)
		return res, err
	}
	res, cause := ClassifyFCM(resp.StatusCode, answer)
	if d, ok := ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now()); ok {
		res.RetryAfter = d
	}
	if res.Outcome == Delivered {
		return res, nil
	}
	if resp.StatusCode == http.StatusUnauthorized && res.Outcome == RetryLater {
		// The access token was refused: fetch a new one for the retry.
		p.tokens.invalidate(access)
	}
	err = errFor(res, name, cause)
	logFailure(p.log, name, d.Token, res, err)
	return res, err
}

func (p *FCMProvider) message(d Device, n Notification, exp time.Time, left time.Duration) fcmMessage {
	data := customData(n)
	for k := range data {
		if fcmReserved(k) {
			delete(data, k)
		}
	}
	body := truncate(n.Body, MaxBodyBytes)
	tag := n.ThreadID
	if tag == "" {
		tag = n.CollapseID
	}
	m := fcmMessage{Message: fcmInner{
		Token:        d.Token,
		Notification: &fcmNotification{Title: n.Title, Body: body},
		Data:         data,
		Android: &fcmAndroid{
			CollapseKey: n.CollapseID,
			Priority:    "HIGH",
			TTL:         strconv.FormatInt(int64(left/time.Second), 10) + "s",
			Notification: &fcmAndroidNotifBody{
				Tag:               tag,
				Sound:             n.Sound,
				NotificationCount: n.Badge,
			},
		},
	}}
	aps := map[string]any{}
	if n.ThreadID != "" {
		aps["thread-id"] = n.ThreadID
	}
	if n.MutableContent {
		aps["mutable-content"] = 1
	}
	if n.Badge != nil {
		aps["badge"] = *n.Badge
	}
	if n.Sound != "" {
		aps["sound"] = n.Sound
	}
	hdr := map[string]string{"apns-expiration": strconv.FormatInt(exp.Unix(), 10)}
	if c := collapseKey(n.CollapseID, apnsCollapseMax, func(r rune) bool { return r > ' ' && r < 0x7f }); c != "" {
		hdr["apns-collapse-id"] = c
	}
	m.Message.APNs = &fcmAPNs{Headers: hdr}
	if len(aps) > 0 {
		m.Message.APNs.Payload = map[string]any{"aps": aps}
	}
	return m
}

// fcmError is the v1 error body (google.rpc.Status).
type fcmError struct {
	Error struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
		Status  string `json:"status"`
		Details []struct {
			Type            string `json:"@type"`
			ErrorCode       string `json:"errorCode"`
			FieldViolations []struct {
				Field       string `json:"field"`
				Description string `json:"description"`
			} `json:"fieldViolations"`
		} `json:"details"`
	} `json:"error"`
}

// ClassifyFCM classifies an FCM v1 answer (HTTP status and body). cause
// is non-nil when the body did not say what the status promised (a 2xx
// without a message name: ErrBadResponse).
func ClassifyFCM(status int, body []byte) (res Result, cause error) {
	res.Status = status
	if status >= 200 && status < 300 {
		var ok struct {
			Name string `json:"name"`
		}
		if err := json.Unmarshal(body, &ok); err != nil || ok.Name == "" {
			res.Outcome = RetryLater
			return res, fmt.Errorf("%w: %d with body %q", ErrBadResponse, status, snippet(body))
		}
		res.Outcome = Delivered
		res.ID = ok.Name
		return res, nil
	}
	var e fcmError
	if err := json.Unmarshal(body, &e); err != nil {
		// A proxy's page or nothing: the status says what it can.
		res.Outcome = classifyHTTP(status)
		if res.Outcome == Delivered { // cannot happen: status is not 2xx
			res.Outcome = Failed
		}
		return res, nil
	}
	code := ""
	tokenField := false
	for _, det := range e.Error.Details {
		if det.ErrorCode != "" && code == "" {
			code = det.ErrorCode
		}
		for _, fv := range det.FieldViolations {
			if fv.Field == "message.token" {
				tokenField = true
			}
		}
	}
	res.Reason = code
	if res.Reason == "" {
		res.Reason = e.Error.Status
	}
	if code == "" {
		code = e.Error.Status
	}
	switch code {
	case "UNREGISTERED":
		res.Outcome = DeadToken
	case "INVALID_ARGUMENT":
		msg := strings.ToLower(e.Error.Message)
		if tokenField || strings.Contains(msg, "registration token") {
			res.Outcome = DeadToken
		} else {
			res.Outcome = Failed
		}
	case "QUOTA_EXCEEDED", "UNAVAILABLE", "INTERNAL":
		res.Outcome = RetryLater
	case "THIRD_PARTY_AUTH_ERROR", "SENDER_ID_MISMATCH":
		// The APNs credentials in Firebase, or a token of another
		// project: a configuration problem, not a dead device.
		res.Outcome = Failed
	case "UNAUTHENTICATED":
		res.Outcome = RetryLater // a new access token is fetched
	default:
		res.Outcome = classifyHTTP(status)
		if res.Outcome == Delivered {
			res.Outcome = Failed
		}
		if status == http.StatusUnauthorized {
			res.Outcome = RetryLater
		}
	}
	return res, nil
}

// snippet is the start of an unreadable body, for an error message.
func snippet(b []byte) string {
	const max = 64
	if len(b) > max {
		return string(b[:max]) + "…"
	}
	return string(b)
}

// tokenErrorResult classifies a failed access-token request: the token
// endpoint refusing our credentials (4xx) is a configuration problem,
// anything else (a timeout, 5xx, 429) is retried.
func tokenErrorResult(err error) Result {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) && re.Response != nil {
		st := re.Response.StatusCode
		res := Result{Status: st, Reason: re.ErrorCode}
		if st == http.StatusTooManyRequests || st >= 500 {
			res.Outcome = RetryLater
		} else {
			res.Outcome = Failed
		}
		return res
	}
	return Result{Outcome: RetryLater}
}

// tokenCache keeps the OAuth2 access token and replaces it early: within
// `early` of its expiry a send starts the fetch of the next one and, while
// the old one has more than early/2 left, goes on with the old one. One
// request runs at a time; a send that must wait for it gives up when its
// context ends, and the request goes on (bounded by the token client's
// timeout) for the next sends.
type tokenCache struct {
	conf   *jwt.Config
	client *http.Client
	early  time.Duration

	mu       sync.Mutex
	tok      *oauth2.Token
	inflight *tokenFetch
}

type tokenFetch struct {
	done chan struct{}
	tok  *oauth2.Token
	err  error
}

func (c *tokenCache) get(ctx context.Context) (string, error) {
	c.mu.Lock()
	if c.tok != nil && time.Until(c.tok.Expiry) > c.early {
		t := c.tok.AccessToken
		c.mu.Unlock()
		return t, nil
	}
	f := c.inflight
	if f == nil {
		f = &tokenFetch{done: make(chan struct{})}
		c.inflight = f
		go c.fetch(f)
	}
	stale := c.tok
	c.mu.Unlock()
	if stale != nil && time.Until(stale.Expiry) > c.early/2 {
		// Refreshing early: the old token serves while the new one comes.
		return stale.AccessToken, nil
	}
	select {
	case <-f.done:
		if f.err != nil {
			if stale != nil && time.Until(stale.Expiry) > 0 {
				// Early refresh failed; the old token is still good.
				return stale.AccessToken, nil
			}
			return "", f.err
		}
		return f.tok.AccessToken, nil
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

func (c *tokenCache) fetch(f *tokenFetch) {
	ctx := context.WithValue(context.Background(), oauth2.HTTPClient, c.client)
	tok, err := c.conf.TokenSource(ctx).Token()
	if err == nil && (tok.AccessToken == "" || tok.Expiry.IsZero()) {
		if tok.AccessToken == "" {
			err = fmt.Errorf("%w: token endpoint gave no access token", ErrBadResponse)
		} else {
			tok.Expiry = time.Now().Add(time.Hour) // Google's tokens last an hour
		}
	}
	c.mu.Lock()
	f.tok, f.err = tok, err
	if err == nil {
		c.tok = tok
	}
	c.inflight = nil
	c.mu.Unlock()
	close(f.done)
}

// invalidate drops the token t (refused by FCM) unless it was replaced.
func (c *tokenCache) invalidate(t string) {
	c.mu.Lock()
	if c.tok != nil && c.tok.AccessToken == t {
		c.tok = nil
	}
	c.mu.Unlock()
}

var _ Provider = (*FCMProvider)(nil)
