package push

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/sideshow/apns2"
	"github.com/sideshow/apns2/certificate"
	"github.com/sideshow/apns2/payload"
	"github.com/sideshow/apns2/token"
)

// APNsConfig configures the APNs provider. Exactly one of token auth
// (KeyFile or KeyPEM, with KeyID and TeamID) and certificate auth
// (CertFile) is set.
type APNsConfig struct {
	// KeyFile is the .p8 signing key from the Apple developer account
	// (or KeyPEM its contents); apns2/token signs the ES256 provider JWT
	// with it and makes a new one before the hour APNs allows.
	KeyFile string
	KeyPEM  []byte
	KeyID   string
	TeamID  string

	// CertFile is a .p12 (or .pem, by its extension) client
	// certificate, CertPassword its password. The .p12 reader
	// (golang.org/x/crypto/pkcs12, through apns2) knows the classic
	// 3DES/RC2 encryption only: a .p12 made by OpenSSL 3 needs
	// "openssl pkcs12 -export -legacy", or convert it to .pem.
	CertFile     string
	CertPassword string

	// Topic is the default apns-topic (the app's bundle ID), used for a
	// device that has none.
	Topic string

	// Endpoint is "production" (the default: production, and the
	// development environment for a device marked Sandbox),
	// "development" (every device) or an https URL (every device; tests).
	Endpoint string

	// TLSConfig is the base TLS configuration (for instance RootCAs that
	// trust a test server); nil means the system's. The client
	// certificate is added to a copy.
	TLSConfig *tls.Config

	// RequestTimeout bounds one send (DefaultRequestTimeout when zero).
	RequestTimeout time.Duration

	Logger *slog.Logger
}

// APNsProvider sends through Apple Push Notification service over one
// kept HTTP/2 connection per APNs host.
type APNsProvider struct {
	prod, dev *apns2.Client // dev is nil when every device goes to prod
	tok       *token.Token  // nil with certificate auth
	topic     string
	timeout   time.Duration
	transport *http.Transport
	log       *slog.Logger
}

// NewAPNs checks cfg, loads the key or certificate and prepares the
// client; it does not connect until the first send.
func NewAPNs(cfg APNsConfig) (*APNsProvider, error) {
	p := &APNsProvider{topic: cfg.Topic, timeout: cfg.RequestTimeout, log: orDiscard(cfg.Logger)}
	hasKey := cfg.KeyFile != "" || len(cfg.KeyPEM) > 0
	var tlsCfg *tls.Config
	if cfg.TLSConfig != nil {
		tlsCfg = cfg.TLSConfig.Clone()
	} else {
		tlsCfg = &tls.Config{}
	}
	if tlsCfg.MinVersion < tls.VersionTLS12 {
		tlsCfg.MinVersion = tls.VersionTLS12
	}
	auth := ""
	switch {
	case hasKey && cfg.CertFile != "":
		return nil, fmt.Errorf("%w: apns: a signing key and a certificate are both set; choose one", ErrConfig)
	case hasKey:
		if cfg.KeyID == "" || cfg.TeamID == "" {
			return nil, fmt.Errorf("%w: apns: token auth needs the key ID and the team ID", ErrConfig)
		}
		pem := cfg.KeyPEM
		var key *ecdsa.PrivateKey
		var err error
		if len(pem) > 0 {
			key, err = token.AuthKeyFromBytes(pem)
		} else {
			key, err = token.AuthKeyFromFile(cfg.KeyFile)
		}
		if err != nil {
			return nil, fmt.Errorf("%w: apns: signing key: %w", ErrConfig, err)
		}
		p.tok = &token.Token{AuthKey: key, KeyID: cfg.KeyID, TeamID: cfg.TeamID}
		if _, err := p.tok.Generate(); err != nil {
			return nil, fmt.Errorf("%w: apns: signing a provider token: %w", ErrConfig, err)
		}
		auth = "token"
	case cfg.CertFile != "":
		var cert tls.Certificate
		var err error
		if strings.HasSuffix(strings.ToLower(cfg.CertFile), ".pem") {
			cert, err = certificate.FromPemFile(cfg.CertFile, cfg.CertPassword)
		} else {
			cert, err = certificate.FromP12File(cfg.CertFile, cfg.CertPassword)
		}
		if err != nil {
			return nil, fmt.Errorf("%w: apns: certificate %s: %w", ErrConfig, cfg.CertFile, err)
		}
		tlsCfg.Certificates = []tls.Certificate{cert}
		auth = "certificate"
	default:
		return nil, fmt.Errorf("%w: apns: neither a signing key (.p8) nor a certificate (.p12) is set", ErrConfig)
	}

	var protos http.Protocols
	protos.SetHTTP2(true) // APNs speaks HTTP/2 only
	p.transport = &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		DialContext:         (&net.Dialer{Timeout: 20 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:     tlsCfg,
		TLSHandshakeTimeout: 10 * time.Second,
		Protocols:           &protos,
		// Keep the connection: APNs treats frequent reconnects as abuse.
		// Pings find a dead connection.
		HTTP2: &http.HTTP2Config{SendPingTimeout: 15 * time.Second, PingTimeout: 15 * time.Second},
	}
	hc := &http.Client{Transport: captureTransport{p.transport}}
	newClient := func(host string) *apns2.Client {
		return &apns2.Client{Host: host, Token: p.tok, Certificate: firstCert(tlsCfg), HTTPClient: hc}
	}
	switch ep := cfg.Endpoint; ep {
	case "", "production":
		p.prod, p.dev = newClient(apns2.HostProduction), newClient(apns2.HostDevelopment)
	case "development":
		p.prod = newClient(apns2.HostDevelopment)
	default:
		u, err := url.Parse(ep)
		if err != nil || u.Scheme != "https" || u.Host == "" {
			return nil, fmt.Errorf("%w: apns: endpoint %q is not production, development or an https URL", ErrConfig, ep)
		}
		p.prod = newClient(strings.TrimSuffix(ep, "/"))
	}
	p.log.Info("push provider ready", "provider", "apns", "auth", auth,
		"endpoint", p.prod.Host, "topic", cfg.Topic)
	return p, nil
}

func firstCert(c *tls.Config) tls.Certificate {
	if len(c.Certificates) > 0 {
		return c.Certificates[0]
	}
	return tls.Certificate{}
}

// Name is "apns".
func (p *APNsProvider) Name() string { return string(APNs) }

// Close closes the idle connections.
func (p *APNsProvider) Close() error {
	p.transport.CloseIdleConnections()
	return nil
}

// apnsCollapseMax is the longest apns-collapse-id (bytes).
const apnsCollapseMax = 64

// Send posts n to /3/device/{token} with apns-push-type alert.
func (p *APNsProvider) Send(ctx context.Context, d Device, n Notification) (Result, error) {
	const name = "apns"
	if d.Platform != APNs {
		return rejectResult(name, fmt.Errorf("%w: platform %q", ErrInvalidDevice, d.Platform))
	}
	if err := checkAPNsToken(d.Token); err != nil {
		return rejectResult(name, err)
	}
	topic := d.Topic
	if topic == "" {
		topic = p.topic
	}
	if topic == "" {
		return rejectResult(name, fmt.Errorf("%w: no APNs topic (app ID) for the device and no default", ErrInvalidDevice))
	}
	exp, _, ok := ttl(n, time.Now())
	if !ok {
		return rejectResult(name, ErrExpired)
	}
	client := p.prod
	if d.Sandbox && p.dev != nil {
		client = p.dev
	}
	pl := payload.NewPayload().AlertTitle(n.Title).AlertBody(truncate(n.Body, MaxBodyBytes))
	if n.Badge != nil {
		pl.Badge(*n.Badge)
	}
	if n.Sound != "" {
		pl.Sound(n.Sound)
	}
	if n.ThreadID != "" {
		pl.ThreadID(n.ThreadID)
	}
	if n.MutableContent {
		pl.MutableContent()
	}
	for k, v := range customData(n) {
		if k == "aps" {
			continue
		}
		pl.Custom(k, v)
	}
	note := &apns2.Notification{
		DeviceToken: d.Token,
		Topic:       topic,
		CollapseID:  collapseKey(n.CollapseID, apnsCollapseMax, func(r rune) bool { return r > ' ' && r < 0x7f }),
		Expiration:  exp,
		Priority:    apns2.PriorityHigh,
		PushType:    apns2.PushTypeAlert,
		Payload:     pl,
	}

	ctx, cancel := withTimeout(ctx, p.timeout)
	defer cancel()
	ans := &answer{}
	resp, err := client.PushWithContext(context.WithValue(ctx, answerKey{}, ans), note)
	if err != nil {
		var res Result
		if ans.status != 0 {
			// The answer came but its body was unreadable.
			res = Result{Outcome: RetryLater, Status: ans.status, RetryAfter: ans.retryAfter}
			err = errFor(res, name, fmt.Errorf("%w: %w", ErrBadResponse, err))
		} else {
			res, err = transportResult(name, err)
		}
		logFailure(p.log, name, d.Token, res, err)
		return res, err
	}
	res := Result{Status: resp.StatusCode, Reason: resp.Reason, ID: resp.ApnsID, RetryAfter: ans.retryAfter}
	switch {
	case resp.StatusCode == http.StatusGone,
		resp.StatusCode == http.StatusBadRequest && resp.Reason == apns2.ReasonBadDeviceToken:
		res.Outcome = DeadToken
		if resp.StatusCode == http.StatusGone && !resp.Timestamp.IsZero() {
			res.InvalidSince = resp.Timestamp.Time
		}
	case resp.StatusCode == http.StatusForbidden && resp.Reason == apns2.ReasonExpiredProviderToken && p.tok != nil:
		// Our JWT is too old for APNs (clock skew, a sleeping machine):
		// sign a new one and try again.
		p.tok.Lock()
		p.tok.IssuedAt = 0
		p.tok.Unlock()
		res.Outcome = RetryLater
	default:
		res.Outcome = classifyHTTP(resp.StatusCode)
	}
	if res.Outcome == Delivered {
		return res, nil
	}
	err = errFor(res, name, nil)
	logFailure(p.log, name, d.Token, res, err)
	return res, err
}

// checkAPNsToken accepts a hex device token of a sane length (APNs tokens
// are 32 bytes today; Apple says not to rely on it).
func checkAPNsToken(t string) error {
	if len(t) < 16 || len(t) > 400 {
		return fmt.Errorf("%w: APNs token of %d characters", ErrInvalidDevice, len(t))
	}
	if _, err := hex.DecodeString(t); err != nil {
		return fmt.Errorf("%w: APNs token is not hex", ErrInvalidDevice)
	}
	return nil
}

// answerKey carries an *answer in a request's context: apns2 does not
// give the response headers, so the transport below notes what the
// classification needs.
type answerKey struct{}

type answer struct {
	status     int
	retryAfter time.Duration
}

type captureTransport struct{ next http.RoundTripper }

func (c captureTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := c.next.RoundTrip(r)
	if err != nil {
		return resp, err
	}
	if a, ok := r.Context().Value(answerKey{}).(*answer); ok {
		a.status = resp.StatusCode
		if d, ok := ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now()); ok {
			a.retryAfter = d
		}
	}
	return resp, nil
}

var _ Provider = (*APNsProvider)(nil)
