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
	// Status and Reason are what the mock answered. Status is 0 when it
	// never answered: Reason "hang" (the Hang fault) or "abandoned" (held,
	// and the client went away first).
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
	// hold: requests that would be accepted wait for release, after the
	// first pass of them go through.
	hold    bool
	pass    int
	held    int
	release chan struct{}
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

// Hold makes the mock hold every request it would accept (answer 200)
// until Release: the sender waits for its answer, as it does for a slow
// APNs. A held request whose client goes away first (its connection
// closed, its context cancelled) is recorded with Status 0 and Reason
// "abandoned": it was never accepted, so it does not count as delivered.
func (m *APNs) Hold() { m.HoldAfter(0) }

// HoldAfter accepts the next n requests it would accept, then holds the
// rest as Hold does.
func (m *APNs) HoldAfter(n int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.hold, m.pass = true, max(n, 0)
	if m.release == nil {
		m.release = make(chan struct{})
	}
}

// Release answers the held requests (200) and stops holding.
func (m *APNs) Release() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.hold, m.pass = false, 0
	if m.release != nil {
		close(m.release)
		m.release = nil
	}
}

// Held counts the requests waiting for Release now.
func (m *APNs) Held() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.held
}

// waitRelease holds r if the mock holds. It returns false when the
// request was abandoned (its client went away, or the mock closed): rec
// is then recorded as such, in the same step as the held count drops, so
// that a test that sees Held fall also sees the abandoned request.
func (m *APNs) waitRelease(r *http.Request, rec APNsRequest) bool {
	m.mu.Lock()
	if !m.hold {
		m.mu.Unlock()
		return true
	}
	if m.pass > 0 {
		m.pass--
		m.mu.Unlock()
		return true
	}
	m.held++
	release := m.release
	m.mu.Unlock()
	released := false
	select {
	case <-release:
		// A client that went away as it was released never gets the
		// answer: that is abandoned too.
		released = r.Context().Err() == nil
	case <-r.Context().Done():
	case <-m.s.closing:
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.held--
	if !released {
		rec.Reason = "abandoned"
		m.reqs = append(m.reqs, rec)
	}
	return released
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
		if !m.waitRelease(r, rec) {
			return
		}
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
