package pushtest

import (
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Subscription is a browser's push subscription on the Web Push mock, as
// PushSubscription.toJSON() gives it: the endpoint and the base64url
// keys.
type Subscription struct {
	Endpoint string
	P256dh   string
	Auth     string
}

// WebPushRequest is a message the Web Push mock received and decrypted.
type WebPushRequest struct {
	Subscription string // the subscription's ID (the endpoint's last segment)
	TTL          int
	Topic        string
	Urgency      string
	// Subject and Audience are the verified VAPID JWT's sub and aud.
	Subject, Audience string
	// Payload is the decrypted message.
	Payload []byte
	Status  int
}

// WebPush is a mock push service (RFC 8030) that checks the VAPID
// authorization (RFC 8292) and decrypts the payload (RFC 8291) with the
// keys of the subscriptions it made.
type WebPush struct {
	URL string
	// VAPIDKey is the application server public key (base64url) the
	// mock accepts; empty accepts any key that verifies its JWT.
	vapidKey string
	s        *server

	mu   sync.Mutex
	subs map[string]*subKeys
	reqs []WebPushRequest
	errs []string
}

type subKeys struct {
	priv *ecdh.PrivateKey
	auth []byte
}

// StartWebPush starts a Web Push mock (HTTP/1.1 over TLS, so that the
// Garbage fault can write bytes that are not HTTP) that accepts VAPID
// JWTs of vapidPublicKey (base64url; empty: any). It is closed at the
// end of the test.
func StartWebPush(t testing.TB, vapidPublicKey string) *WebPush {
	m := &WebPush{vapidKey: vapidPublicKey, subs: map[string]*subKeys{}}
	mux := http.NewServeMux()
	mux.HandleFunc("/push/{id}", m.serve)
	m.s = newServer(t, mux, false, nil)
	m.URL = m.s.srv.URL
	return m
}

// TLSConfig trusts the mock's certificate.
func (m *WebPush) TLSConfig() *tls.Config { return m.s.tlsConfig() }

// Connections counts the TCP connections the mock accepted.
func (m *WebPush) Connections() int { return m.s.connections() }

// Subscribe makes a subscription as a browser would: a new P-256 key pair
// and auth secret, and an endpoint on the mock.
func (m *WebPush) Subscribe() Subscription {
	priv, err := ecdh.P256().GenerateKey(nil)
	if err != nil {
		panic(fmt.Sprintf("pushtest: P-256 key: %v", err))
	}
	auth := randomBytes(16)
	id := randomID()
	m.mu.Lock()
	m.subs[id] = &subKeys{priv: priv, auth: auth}
	m.mu.Unlock()
	return Subscription{
		Endpoint: m.URL + "/push/" + id,
		P256dh:   base64.RawURLEncoding.EncodeToString(priv.PublicKey().Bytes()),
		Auth:     base64.RawURLEncoding.EncodeToString(auth),
	}
}

// ID is the mock's ID of a subscription (for Fail and the records).
func (s Subscription) ID() string {
	return s.Endpoint[strings.LastIndex(s.Endpoint, "/")+1:]
}

// Fail scripts the answer for a subscription (OK clears it).
func (m *WebPush) Fail(s Subscription, f Fault) { m.s.fail(s.ID(), f) }

// SetRetryAfter sets the Retry-After of TooManyRequests ("7" at start).
func (m *WebPush) SetRetryAfter(v string) { m.s.setRetryAfter(v) }

// Requests returns what the mock received, in order.
func (m *WebPush) Requests() []WebPushRequest {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]WebPushRequest(nil), m.reqs...)
}

// Errors returns why the mock refused requests (bad VAPID, a payload it
// could not decrypt).
func (m *WebPush) Errors() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.errs...)
}

// Delivered counts the messages accepted for s.
func (m *WebPush) Delivered(s Subscription) int {
	n := 0
	for _, r := range m.Requests() {
		if r.Subscription == s.ID() && r.Status == http.StatusCreated {
			n++
		}
	}
	return n
}

func (m *WebPush) refuse(w http.ResponseWriter, status int, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	m.mu.Lock()
	m.errs = append(m.errs, msg)
	m.mu.Unlock()
	http.Error(w, msg, status)
}

func (m *WebPush) serve(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	rec := WebPushRequest{Subscription: id, Topic: r.Header.Get("Topic"), Urgency: r.Header.Get("Urgency")}
	m.mu.Lock()
	keys := m.subs[id]
	m.mu.Unlock()
	f, retryAfter := m.s.fault(id)
	record := func(status int) {
		rec.Status = status
		m.mu.Lock()
		m.reqs = append(m.reqs, rec)
		m.mu.Unlock()
	}
	switch {
	case r.Method != http.MethodPost:
		m.refuse(w, http.StatusMethodNotAllowed, "method %s", r.Method)
		return
	case keys == nil:
		m.refuse(w, http.StatusNotFound, "no subscription %s", id)
		return
	case f == Garbage:
		record(0)
		hj, ok := w.(http.Hijacker)
		if !ok {
			m.refuse(w, http.StatusInternalServerError, "cannot hijack")
			return
		}
		conn, buf, err := hj.Hijack()
		if err != nil {
			return
		}
		_, _ = buf.WriteString("SPDY/9 what\x00\x01\x02\r\n\r\n")
		_ = buf.Flush()
		_ = conn.Close()
		return
	case f == Hang:
		record(0)
		m.s.hang(r.Context())
		return
	}
	ttl, err := strconv.Atoi(r.Header.Get("TTL"))
	if err != nil || ttl < 0 {
		m.refuse(w, http.StatusBadRequest, "TTL %q", r.Header.Get("TTL"))
		return
	}
	rec.TTL = ttl
	if len(rec.Topic) > 32 || strings.IndexFunc(rec.Topic, func(c rune) bool {
		return !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_')
	}) >= 0 {
		m.refuse(w, http.StatusBadRequest, "Topic %q", rec.Topic)
		return
	}
	if err := m.checkVAPID(r, &rec); err != nil {
		m.refuse(w, http.StatusUnauthorized, "VAPID: %v", err)
		return
	}
	if ce := r.Header.Get("Content-Encoding"); ce != "aes128gcm" {
		m.refuse(w, http.StatusUnsupportedMediaType, "Content-Encoding %q", ce)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 8<<10))
	if err != nil {
		m.refuse(w, http.StatusBadRequest, "body: %v", err)
		return
	}
	if len(body) > 4096 {
		m.refuse(w, http.StatusRequestEntityTooLarge, "body of %d bytes", len(body))
		return
	}
	plain, err := DecryptWebPush(body, keys.priv, keys.auth)
	if err != nil {
		m.refuse(w, http.StatusBadRequest, "decrypt: %v", err)
		return
	}
	rec.Payload = plain
	switch f {
	case Unregistered:
		record(http.StatusGone)
		http.Error(w, "subscription expired", http.StatusGone)
	case BadToken:
		record(http.StatusNotFound)
		http.Error(w, "no such subscription", http.StatusNotFound)
	case BadRequest:
		record(http.StatusBadRequest)
		http.Error(w, "bad request", http.StatusBadRequest)
	case TooManyRequests:
		record(http.StatusTooManyRequests)
		w.Header().Set("Retry-After", retryAfter)
		http.Error(w, "slow down", http.StatusTooManyRequests)
	case ServerError:
		record(http.StatusInternalServerError)
		http.Error(w, "oops", http.StatusInternalServerError)
	default:
		record(http.StatusCreated)
		w.Header().Set("Location", m.URL+"/message/"+randomID())
		w.WriteHeader(http.StatusCreated)
	}
}

// checkVAPID verifies "Authorization: vapid t=<jwt>, k=<key>" (RFC 8292):
// the JWT is ES256 by k, its aud is the endpoint's origin, its exp at
// most a day away, its sub a mailto: or https: contact.
func (m *WebPush) checkVAPID(r *http.Request, rec *WebPushRequest) error {
	authz, ok := strings.CutPrefix(r.Header.Get("Authorization"), "vapid ")
	if !ok {
		return fmt.Errorf("authorization %q is not vapid", r.Header.Get("Authorization"))
	}
	var t, k string
	for part := range strings.SplitSeq(authz, ",") {
		name, val, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch name {
		case "t":
			t = val
		case "k":
			k = val
		}
	}
	if t == "" || k == "" {
		return fmt.Errorf("authorization lacks t or k")
	}
	if m.vapidKey != "" && k != m.vapidKey {
		return fmt.Errorf("k is not the application server key")
	}
	raw, err := base64.RawURLEncoding.DecodeString(k)
	if err != nil || len(raw) != 65 || raw[0] != 4 {
		return fmt.Errorf("k is not a base64url P-256 point")
	}
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), raw)
	if err != nil {
		return fmt.Errorf("k: %w", err)
	}
	claims := jwt.MapClaims{}
	if _, err := jwt.ParseWithClaims(t, claims, func(*jwt.Token) (any, error) { return pub, nil },
		jwt.WithValidMethods([]string{"ES256"}), jwt.WithAudience(m.URL), jwt.WithExpirationRequired()); err != nil {
		return err
	}
	exp, err := claims.GetExpirationTime()
	if err != nil || time.Until(exp.Time) > 24*time.Hour {
		return fmt.Errorf("exp more than 24 hours away")
	}
	sub, _ := claims.GetSubject()
	if !strings.HasPrefix(sub, "mailto:") && !strings.HasPrefix(sub, "https:") {
		return fmt.Errorf("sub %q is neither mailto: nor https:", sub)
	}
	rec.Subject = sub
	rec.Audience = m.URL
	return nil
}
