// Package pushtest has mock push services for tests: an APNs endpoint
// (HTTP/2), an FCM HTTP v1 endpoint with its OAuth2 token endpoint, and
// a Web Push service that decrypts what it receives. Each listens on
// 127.0.0.1, port 0, with TLS (httptest's certificate: trust it with
// TLSConfig or Client), speaks the real protocol, checks what a real
// service checks (the provider JWT, the OAuth2 assertion, the VAPID JWT)
// and records what it got. Scripted faults (Fail) make it answer as a
// service does when a token is dead, when it is overloaded or broken.
//
// The package does not import package push: a test builds push.Device
// values from what the mocks give.
package pushtest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// Fault is a scripted answer.
type Fault int

// The faults. Each mock answers them the way its service does.
const (
	// OK: accept the notification.
	OK Fault = iota
	// Unregistered: APNs 410 Unregistered, FCM 404 UNREGISTERED, Web
	// Push 410 Gone.
	Unregistered
	// BadToken: APNs 400 BadDeviceToken, FCM 400 INVALID_ARGUMENT on
	// message.token, Web Push 404 Not Found.
	BadToken
	// BadRequest: a 400 that is not about the token (APNs BadTopic, FCM
	// INVALID_ARGUMENT on another field, Web Push 400).
	BadRequest
	// TooManyRequests: 429 with Retry-After (the mock's RetryAfter).
	TooManyRequests
	// ServerError: 500 (APNs InternalServerError, FCM INTERNAL).
	ServerError
	// Garbage: APNs and FCM answer 200 with a body that is not JSON; Web
	// Push writes bytes that are not HTTP.
	Garbage
	// Hang: no answer until the request is cancelled or the mock closed.
	Hang
)

// server is what the three mocks share: the TLS server, the scripted
// faults, and the release of hanging requests at Close.
type server struct {
	srv     *httptest.Server
	closing chan struct{}
	once    sync.Once

	mu         sync.Mutex
	faults     map[string]Fault
	retryAfter string
	conns      int
}

func newServer(t testing.TB, h http.Handler, http2 bool, tlsCfg *tls.Config) *server {
	s := &server{closing: make(chan struct{}), faults: map[string]Fault{}, retryAfter: "7"}
	s.srv = httptest.NewUnstartedServer(h)
	s.srv.EnableHTTP2 = http2
	s.srv.TLS = tlsCfg
	s.srv.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			s.mu.Lock()
			s.conns++
			s.mu.Unlock()
		}
	}
	s.srv.StartTLS()
	t.Cleanup(s.close)
	return s
}

func (s *server) close() {
	s.once.Do(func() {
		close(s.closing)
		s.srv.Close()
	})
}

// connections counts the connections accepted so far.
func (s *server) connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns
}

// fail scripts f for key.
func (s *server) fail(key string, f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f == OK {
		delete(s.faults, key)
		return
	}
	s.faults[key] = f
}

func (s *server) fault(key string) (Fault, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.faults[key], s.retryAfter
}

func (s *server) setRetryAfter(v string) {
	s.mu.Lock()
	s.retryAfter = v
	s.mu.Unlock()
}

// hang blocks until the request is cancelled or the mock closes.
func (s *server) hang(ctx context.Context) {
	select {
	case <-ctx.Done():
	case <-s.closing:
	}
}

// tlsConfig trusts the mock's certificate.
func (s *server) tlsConfig() *tls.Config {
	pool := x509.NewCertPool()
	pool.AddCert(s.srv.Certificate())
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
}

// NewAPNsKey makes an APNs signing key as Apple's .p8 file has it: a
// PKCS #8 PEM "PRIVATE KEY" of a P-256 ECDSA key.
func NewAPNsKey() (pemBytes []byte, key *ecdsa.PrivateKey, err error) {
	key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), key, nil
}

// NewClientCert makes a self-signed client certificate (for APNs
// certificate auth) with the common name cn, as one PEM with the
// certificate and its PKCS #8 key.
func NewClientCert(cn string) ([]byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	out := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	return append(out, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})...), nil
}

// NewVAPIDKeys makes a VAPID key pair as webpush-go takes it: unpadded
// base64url of the uncompressed public point and of the private scalar.
func NewVAPIDKeys() (public, private string, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	ek, err := key.ECDH()
	if err != nil {
		return "", "", err
	}
	return base64.RawURLEncoding.EncodeToString(ek.PublicKey().Bytes()),
		base64.RawURLEncoding.EncodeToString(ek.Bytes()), nil
}

// NewDeviceToken is a random APNs device token (32 bytes, hex).
func NewDeviceToken() string {
	return hex.EncodeToString(randomBytes(32))
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("pushtest: crypto/rand: %v", err))
	}
	return b
}

func randomID() string {
	return base64.RawURLEncoding.EncodeToString(randomBytes(12))
}
