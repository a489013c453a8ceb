package pushtest

import (
	"crypto/ecdsa"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// APNsOptions configures the APNs mock. With Key set, requests must carry
// a provider JWT signed by it (token auth); with ClientCerts, a TLS
// client certificate (certificate auth). Both may be set: a request
// passes with either.
type APNsOptions struct {
	Key    *ecdsa.PublicKey
	KeyID  string
	TeamID string
	// ClientCerts asks for a client certificate (any; its common name is
	// recorded).
	ClientCerts bool
}

// APNsRequest is what the APNs mock received.
type APNsRequest struct {
	At         time.Time // when the request arrived
	Proto      string    // "HTTP/2.0"
	Token      string    // from the path /3/device/{token}
	Topic      string
	PushType   string
	CollapseID string
	Priority   string
	Expiration string
	// KeyID and TeamID are from a verified provider JWT; ClientCN is the
	// client certificate's common name.
	KeyID, TeamID, ClientCN string
	// APS is the "aps" dictionary; Custom the other top-level keys.
	APS    map[string]any
	Custom map[string]any
	// Status and Reason are what the mock answered.
	Status int
	Reason string
}

// APNs is the mock APNs endpoint (HTTP/2 over TLS).
type APNs struct {
	// URL is the base URL (https://127.0.0.1:port), the provider's
	// endpoint.
	URL  string
	opts APNsOptions
	s    *server

	mu        sync.Mutex
	reqs      []APNsRequest
	minIssued time.Time
	// verified are provider JWTs already checked, with their issue time:
	// a provider sends the same token for up to an hour, and verifying
	// ES256 on every request would make the mock, not the sender, the
	// bottleneck of a benchmark on the same cores.
	verified map[string]time.Time
}

// StartAPNs starts an APNs mock closed at the end of the test.
func StartAPNs(t testing.TB, opts APNsOptions) *APNs {
	m := &APNs{opts: opts}
	var tlsCfg *tls.Config
	if opts.ClientCerts {
		tlsCfg = &tls.Config{ClientAuth: tls.RequestClientCert}
	}
	m.s = newServer(t, http.HandlerFunc(m.serve), true, tlsCfg)
	m.URL = m.s.srv.URL
	return m
}

// TLSConfig trusts the mock's certificate.
func (m *APNs) TLSConfig() *tls.Config { return m.s.tlsConfig() }

// Connections counts the TCP connections the mock accepted.
func (m *APNs) Connections() int { return m.s.connections() }

// Fail scripts the answer for a device token (OK clears it).
func (m *APNs) Fail(token string, f Fault) { m.s.fail(token, f) }

// SetRetryAfter sets the Retry-After of TooManyRequests ("7" at start).
func (m *APNs) SetRetryAfter(v string) { m.s.setRetryAfter(v) }

// ExpireTokensIssuedBefore makes the mock answer 403
// ExpiredProviderToken to provider JWTs issued before t (as APNs does to
// one older than an hour).
func (m *APNs) ExpireTokensIssuedBefore(t time.Time) {
	m.mu.Lock()
	m.minIssued = t
	m.mu.Unlock()
}

// Close stops the mock now (hanging requests are released).
func (m *APNs) Close() { m.s.close() }

// Requests returns what the mock received, in order.
func (m *APNs) Requests() []APNsRequest {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]APNsRequest(nil), m.reqs...)
}

// Count counts the requests for which match is true (without copying
// them, for polls over many requests).
func (m *APNs) Count(match func(r *APNsRequest) bool) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for i := range m.reqs {
		if match(&m.reqs[i]) {
			n++
		}
	}
	return n
}

// Delivered counts the notifications accepted for token.
func (m *APNs) Delivered(token string) int {
	n := 0
	for _, r := range m.Requests() {
		if r.Token == token && r.Status == http.StatusOK {
			n++
		}
	}
	return n
}

func (m *APNs) serve(w http.ResponseWriter, r *http.Request) {
	rec := APNsRequest{
		At:         time.Now(),
		Proto:      r.Proto,
		Topic:      r.Header.Get("apns-topic"),
		PushType:   r.Header.Get("apns-push-type"),
		CollapseID: r.Header.Get("apns-collapse-id"),
		Priority:   r.Header.Get("apns-priority"),
		Expiration: r.Header.Get("apns-expiration"),
	}
	answer := func(status int, reason string) {
		rec.Status, rec.Reason = status, reason
		m.mu.Lock()
		m.reqs = append(m.reqs, rec)
		m.mu.Unlock()
		w.Header().Set("apns-id", "00000000-0000-4000-8000-"+hex.EncodeToString(randomBytes(6)))
		if status == http.StatusOK {
			w.WriteHeader(status)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		body := map[string]any{"reason": reason}
		if status == http.StatusGone {
			body["timestamp"] = time.Now().UnixMilli()
		}
		_ = json.NewEncoder(w).Encode(body)
	}
	if r.ProtoMajor != 2 {
		answer(http.StatusBadRequest, "BadProtocol") // APNs speaks HTTP/2 only
		return
	}
	if r.Method != http.MethodPost {
		answer(http.StatusMethodNotAllowed, "MethodNotAllowed")
		return
	}
	token, ok := strings.CutPrefix(r.URL.Path, "/3/device/")
	if !ok || token == "" || strings.Contains(token, "/") {
		answer(http.StatusNotFound, "BadPath")
		return
	}
	rec.Token = token
	if _, err := hex.DecodeString(token); err != nil {
		answer(http.StatusBadRequest, "BadDeviceToken")
		return
	}
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		rec.ClientCN = r.TLS.PeerCertificates[0].Subject.CommonName
	}
	if reason := m.checkAuth(r, &rec); reason != "" {
		answer(http.StatusForbidden, reason)
		return
	}
	if rec.Topic == "" {
		answer(http.StatusBadRequest, "MissingTopic")
		return
	}
	if rec.PushType != "alert" {
		answer(http.StatusBadRequest, "InvalidPushType")
		return
	}
	if len(rec.CollapseID) > 64 {
		answer(http.StatusBadRequest, "BadCollapseId")
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 8<<10))
	if err != nil {
		answer(http.StatusBadRequest, "PayloadEmpty")
		return
	}
	if len(body) > 4096 {
		answer(http.StatusRequestEntityTooLarge, "PayloadTooLarge")
		return
	}
	var payload map[string]any
	if err := json.Unmarshal(body, &payload); err != nil {
		answer(http.StatusBadRequest, "PayloadEmpty")
		return
	}
	aps, ok := payload["aps"].(map[string]any)
	if !ok {
		answer(http.StatusBadRequest, "PayloadEmpty")
		return
	}
	rec.APS = aps
	delete(payload, "aps")
	rec.Custom = payload

	f, retryAfter := m.s.fault(token)
	switch f {
	case Unregistered:
		answer(http.StatusGone, "Unregistered")
	case BadToken:
		answer(http.StatusBadRequest, "BadDeviceToken")
	case BadRequest:
		answer(http.StatusBadRequest, "BadTopic")
	case TooManyRequests:
		w.Header().Set("Retry-After", retryAfter)
		answer(http.StatusTooManyRequests, "TooManyRequests")
	case ServerError:
		answer(http.StatusInternalServerError, "InternalServerError")
	case Garbage:
		rec.Status, rec.Reason = http.StatusOK, "garbage"
		m.mu.Lock()
		m.reqs = append(m.reqs, rec)
		m.mu.Unlock()
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, "<html>502 upstream said hi</html>")
	case Hang:
		rec.Reason = "hang"
		m.mu.Lock()
		m.reqs = append(m.reqs, rec)
		m.mu.Unlock()
		m.s.hang(r.Context())
	default:
		answer(http.StatusOK, "")
	}
}

// checkAuth verifies the provider JWT (or accepts a client certificate);
// it returns the APNs reason for a refusal, or "".
func (m *APNs) checkAuth(r *http.Request, rec *APNsRequest) string {
	authz := r.Header.Get("authorization")
	if authz == "" {
		if m.opts.ClientCerts && rec.ClientCN != "" {
			return ""
		}
		return "MissingProviderToken"
	}
	if m.opts.Key == nil {
		return "InvalidProviderToken"
	}
	raw, ok := strings.CutPrefix(authz, "bearer ")
	if !ok {
		return "InvalidProviderToken"
	}
	m.mu.Lock()
	iatCached, seen := m.verified[raw]
	minIssued := m.minIssued
	m.mu.Unlock()
	if seen {
		if time.Since(iatCached) > time.Hour || iatCached.Before(minIssued) {
			return "ExpiredProviderToken"
		}
		rec.KeyID, rec.TeamID = m.opts.KeyID, m.opts.TeamID
		return ""
	}
	claims := jwt.MapClaims{}
	tok, err := jwt.ParseWithClaims(raw, claims, func(t *jwt.Token) (any, error) {
		if kid, _ := t.Header["kid"].(string); kid != m.opts.KeyID {
			return nil, fmt.Errorf("kid %q", kid)
		}
		return m.opts.Key, nil
	}, jwt.WithValidMethods([]string{"ES256"}), jwt.WithIssuer(m.opts.TeamID), jwt.WithIssuedAt())
	if err != nil || !tok.Valid {
		return "InvalidProviderToken"
	}
	iat, err := claims.GetIssuedAt()
	if err != nil || iat == nil {
		return "InvalidProviderToken"
	}
	if time.Since(iat.Time) > time.Hour || iat.Time.Before(minIssued) {
		return "ExpiredProviderToken"
	}
	m.mu.Lock()
	if m.verified == nil {
		m.verified = map[string]time.Time{}
	}
	m.verified[raw] = iat.Time
	m.mu.Unlock()
	rec.KeyID = m.opts.KeyID
	rec.TeamID, _ = claims.GetIssuer()
	return ""
}
