package pushtest

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// FCMOptions configures the FCM mock.
type FCMOptions struct {
	// ProjectID is the service account's project ("test-project").
	ProjectID string
	// TokenLifetime is the expires_in of the access tokens (an hour).
	TokenLifetime time.Duration
}

// FCMRequest is a message the FCM mock received.
type FCMRequest struct {
	Project     string
	AccessToken string
	// Message is the decoded "message" object of the v1 body.
	Message FCMMessage
	Status  int
	Reason  string
}

// FCMMessage is the part of a v1 message the mock decodes.
type FCMMessage struct {
	Token        string `json:"token"`
	Notification struct {
		Title string `json:"title"`
		Body  string `json:"body"`
	} `json:"notification"`
	Data    map[string]string `json:"data"`
	Android struct {
		CollapseKey  string `json:"collapse_key"`
		Priority     string `json:"priority"`
		TTL          string `json:"ttl"`
		Notification struct {
			Tag               string `json:"tag"`
			Sound             string `json:"sound"`
			NotificationCount *int   `json:"notification_count"`
		} `json:"notification"`
	} `json:"android"`
	APNs struct {
		Headers map[string]string `json:"headers"`
		Payload map[string]any    `json:"payload"`
	} `json:"apns"`
}

// FCM is the mock FCM HTTP v1 endpoint and its OAuth2 token endpoint
// (/token): the token endpoint verifies the service account's signed
// assertion (RFC 7523) with the account's public key and hands out
// access tokens; the send endpoint accepts only those.
type FCM struct {
	// URL is the base URL, the provider's endpoint; TokenURL is the
	// token_uri of ServiceAccountJSON.
	URL, TokenURL string
	opts          FCMOptions
	key           *rsa.PrivateKey
	keyID, email  string
	s             *server

	mu         sync.Mutex
	access     map[string]time.Time // token → expiry
	issued     int
	tokenFault Fault
	reqs       []FCMRequest
	errs       []string
}

// StartFCM starts an FCM mock (and makes its service account, a 2048-bit
// RSA key) closed at the end of the test.
func StartFCM(t testing.TB, opts FCMOptions) *FCM {
	if opts.ProjectID == "" {
		opts.ProjectID = "test-project"
	}
	if opts.TokenLifetime == 0 {
		opts.TokenLifetime = time.Hour
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatalf("pushtest: RSA key: %v", err)
	}
	m := &FCM{opts: opts, key: key, keyID: randomID(),
		email: "edgechat-push@" + opts.ProjectID + ".iam.gserviceaccount.com", access: map[string]time.Time{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /token", m.serveToken)
	mux.HandleFunc("POST /v1/projects/{project}/{send}", m.serveSend)
	m.s = newServer(t, mux, true, nil)
	m.URL = m.s.srv.URL
	m.TokenURL = m.URL + "/token"
	return m
}

// ServiceAccountJSON is a service-account key file for the mock, as the
// Firebase console gives one.
func (m *FCM) ServiceAccountJSON() []byte {
	der, err := x509.MarshalPKCS8PrivateKey(m.key)
	if err != nil {
		panic(err)
	}
	b, _ := json.Marshal(map[string]string{
		"type":           "service_account",
		"project_id":     m.opts.ProjectID,
		"private_key_id": m.keyID,
		"private_key":    string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"client_email":   m.email,
		"client_id":      "1234567890",
		"auth_uri":       "https://accounts.google.com/o/oauth2/auth",
		"token_uri":      m.TokenURL,
	})
	return b
}

// TLSConfig trusts the mock's certificate.
func (m *FCM) TLSConfig() *tls.Config { return m.s.tlsConfig() }

// Connections counts the TCP connections the mock accepted.
func (m *FCM) Connections() int { return m.s.connections() }

// Fail scripts the answer for a registration token (OK clears it).
func (m *FCM) Fail(token string, f Fault) { m.s.fail(token, f) }

// FailTokens scripts the token endpoint's answer (ServerError,
// BadRequest for invalid_grant, Hang; OK clears it).
func (m *FCM) FailTokens(f Fault) {
	m.mu.Lock()
	m.tokenFault = f
	m.mu.Unlock()
}

// SetRetryAfter sets the Retry-After of TooManyRequests ("7" at start).
func (m *FCM) SetRetryAfter(v string) { m.s.setRetryAfter(v) }

// RevokeTokens forgets every access token handed out (the next send with
// one gets 401 UNAUTHENTICATED).
func (m *FCM) RevokeTokens() {
	m.mu.Lock()
	clear(m.access)
	m.mu.Unlock()
}

// TokensIssued counts the access tokens handed out.
func (m *FCM) TokensIssued() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.issued
}

// Requests returns the messages the mock received, in order.
func (m *FCM) Requests() []FCMRequest {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]FCMRequest(nil), m.reqs...)
}

// Errors returns why the mock refused requests (a bad assertion, a bad
// body): a test that expects none checks it is empty.
func (m *FCM) Errors() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.errs...)
}

// Delivered counts the messages accepted for token.
func (m *FCM) Delivered(token string) int {
	n := 0
	for _, r := range m.Requests() {
		if r.Message.Token == token && r.Status == http.StatusOK {
			n++
		}
	}
	return n
}

func (m *FCM) refuse(w http.ResponseWriter, status int, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	m.mu.Lock()
	m.errs = append(m.errs, msg)
	m.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": "invalid_grant", "error_description": msg})
}

// serveToken is the OAuth2 token endpoint: the JWT-bearer grant.
func (m *FCM) serveToken(w http.ResponseWriter, r *http.Request) {
	m.mu.Lock()
	f := m.tokenFault
	m.mu.Unlock()
	switch f {
	case Hang:
		m.s.hang(r.Context())
		return
	case ServerError:
		http.Error(w, `{"error":"internal_failure"}`, http.StatusInternalServerError)
		return
	case BadRequest:
		m.refuse(w, http.StatusBadRequest, "scripted invalid_grant")
		return
	}
	if err := r.ParseForm(); err != nil {
		m.refuse(w, http.StatusBadRequest, "form: %v", err)
		return
	}
	if gt := r.PostForm.Get("grant_type"); gt != "urn:ietf:params:oauth:grant-type:jwt-bearer" {
		m.refuse(w, http.StatusBadRequest, "grant_type %q", gt)
		return
	}
	claims := jwt.MapClaims{}
	_, err := jwt.ParseWithClaims(r.PostForm.Get("assertion"), claims, func(t *jwt.Token) (any, error) {
		if kid, _ := t.Header["kid"].(string); kid != m.keyID {
			return nil, fmt.Errorf("kid %q, want %q", kid, m.keyID)
		}
		return &m.key.PublicKey, nil
	}, jwt.WithValidMethods([]string{"RS256"}), jwt.WithIssuer(m.email),
		jwt.WithAudience(m.TokenURL), jwt.WithExpirationRequired(), jwt.WithIssuedAt())
	if err != nil {
		m.refuse(w, http.StatusBadRequest, "assertion: %v", err)
		return
	}
	if scope, _ := claims["scope"].(string); !strings.Contains(scope, "https://www.googleapis.com/auth/firebase.messaging") {
		m.refuse(w, http.StatusBadRequest, "scope %q", scope)
		return
	}
	tok := "ya29.mock-" + randomID()
	m.mu.Lock()
	m.access[tok] = time.Now().Add(m.opts.TokenLifetime)
	m.issued++
	m.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"access_token": tok,
		"token_type":   "Bearer",
		"expires_in":   int(m.opts.TokenLifetime / time.Second),
	})
}

// fcmErr writes a v1 error (google.rpc.Status with an FcmError detail).
func fcmErr(w http.ResponseWriter, code int, status, errorCode, msg string, details ...map[string]any) {
	d := []map[string]any{}
	if errorCode != "" {
		d = append(d, map[string]any{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": errorCode})
	}
	d = append(d, details...)
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{
		"code": code, "message": msg, "status": status, "details": d,
	}})
}

// serveSend is projects.messages.send.
func (m *FCM) serveSend(w http.ResponseWriter, r *http.Request) {
	project := r.PathValue("project")
	if r.PathValue("send") != "messages:send" {
		http.NotFound(w, r)
		return
	}
	rec := FCMRequest{Project: project}
	record := func(status int, reason string) {
		rec.Status, rec.Reason = status, reason
		m.mu.Lock()
		m.reqs = append(m.reqs, rec)
		m.mu.Unlock()
	}
	bearer, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	m.mu.Lock()
	exp, known := m.access[bearer]
	m.mu.Unlock()
	if !ok || !known || time.Now().After(exp) {
		record(http.StatusUnauthorized, "UNAUTHENTICATED")
		fcmErr(w, http.StatusUnauthorized, "UNAUTHENTICATED", "", "Request had invalid authentication credentials.")
		return
	}
	rec.AccessToken = bearer
	if project != m.opts.ProjectID {
		record(http.StatusForbidden, "PERMISSION_DENIED")
		fcmErr(w, http.StatusForbidden, "PERMISSION_DENIED", "", "Permission denied on project "+project)
		return
	}
	var body struct {
		Message *FCMMessage `json:"message"`
	}
	dec := json.NewDecoder(io.LimitReader(r.Body, 64<<10))
	if err := dec.Decode(&body); err != nil || body.Message == nil {
		record(http.StatusBadRequest, "INVALID_ARGUMENT")
		fcmErr(w, http.StatusBadRequest, "INVALID_ARGUMENT", "INVALID_ARGUMENT", "Invalid JSON payload received.")
		return
	}
	rec.Message = *body.Message
	if rec.Message.Token == "" {
		record(http.StatusBadRequest, "INVALID_ARGUMENT")
		fcmErr(w, http.StatusBadRequest, "INVALID_ARGUMENT", "INVALID_ARGUMENT", "Recipient of the message is not set.")
		return
	}
	f, retryAfter := m.s.fault(rec.Message.Token)
	switch f {
	case Unregistered:
		record(http.StatusNotFound, "UNREGISTERED")
		fcmErr(w, http.StatusNotFound, "NOT_FOUND", "UNREGISTERED", "Requested entity was not found.")
	case BadToken:
		record(http.StatusBadRequest, "INVALID_ARGUMENT")
		fcmErr(w, http.StatusBadRequest, "INVALID_ARGUMENT", "INVALID_ARGUMENT",
			"The registration token is not a valid FCM registration token",
			map[string]any{"@type": "type.googleapis.com/google.rpc.BadRequest",
				"fieldViolations": []map[string]string{{"field": "message.token", "description": "Invalid registration token"}}})
	case BadRequest:
		record(http.StatusBadRequest, "INVALID_ARGUMENT")
		fcmErr(w, http.StatusBadRequest, "INVALID_ARGUMENT", "INVALID_ARGUMENT",
			"Invalid value at 'message.android.ttl'",
			map[string]any{"@type": "type.googleapis.com/google.rpc.BadRequest",
				"fieldViolations": []map[string]string{{"field": "message.android.ttl", "description": "Invalid value"}}})
	case TooManyRequests:
		record(http.StatusTooManyRequests, "QUOTA_EXCEEDED")
		w.Header().Set("Retry-After", retryAfter)
		fcmErr(w, http.StatusTooManyRequests, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED", "Quota exceeded.")
	case ServerError:
		record(http.StatusInternalServerError, "INTERNAL")
		fcmErr(w, http.StatusInternalServerError, "INTERNAL", "INTERNAL", "Internal error encountered.")
	case Garbage:
		record(http.StatusOK, "garbage")
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, "<html>not json</html>")
	case Hang:
		record(0, "hang")
		m.s.hang(r.Context())
	default:
		record(http.StatusOK, "")
		w.Header().Set("Content-Type", "application/json; charset=UTF-8")
		_ = json.NewEncoder(w).Encode(map[string]string{"name": "projects/" + project + "/messages/0:" + randomID()})
	}
}
