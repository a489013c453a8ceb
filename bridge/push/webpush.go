package push

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"syscall"
	"time"

	webpush "github.com/SherClockHolmes/webpush-go"
)

// WebPushConfig configures the Web Push provider.
type WebPushConfig struct {
	// VAPIDPublicKey and VAPIDPrivateKey are the application server's
	// P-256 key pair, base64url (unpadded or padded) as webpush-go and
	// browsers' applicationServerKey take them: the uncompressed public
	// point (65 bytes) and the private scalar (32 bytes).
	VAPIDPublicKey  string
	VAPIDPrivateKey string
	// Subject is the VAPID contact: "mailto:ops@example.com" or an https
	// URL.
	Subject string
	// Urgency is the Urgency header: "very-low", "low", "normal" or
	// "high" (the default: a chat message).
	Urgency string

	// HTTPClient sends the requests; nil means a client of its own, with
	// TLSConfig when set.
	HTTPClient *http.Client
	TLSConfig  *tls.Config

	// RequestTimeout bounds one send (DefaultRequestTimeout when zero).
	RequestTimeout time.Duration

	// AllowPrivateEndpoints lets subscriptions name endpoints on loopback,
	// private, link-local and other non-public addresses (tests, a closed
	// network with its own push service). Off, such an endpoint is never
	// posted to and its registration is removed as dead: any signed-in
	// user registers the endpoint, and the node would POST into its own
	// network for them.
	AllowPrivateEndpoints bool

	Logger *slog.Logger
}

// WebPushPayload is the JSON a service worker receives (decrypted) in
// its push event.
type WebPushPayload struct {
	Title string `json:"title"`
	Body  string `json:"body,omitempty"`
	Badge *int   `json:"badge,omitempty"`
	// Tag is the collapse ID, for showNotification's tag (a newer
	// notification of the conversation replaces the older).
	Tag            string            `json:"tag,omitempty"`
	ThreadID       string            `json:"threadId,omitempty"`
	MessageID      string            `json:"messageId,omitempty"`
	ConversationID string            `json:"conversationId,omitempty"`
	Data           map[string]string `json:"data,omitempty"`
}

// WebPushProvider sends through the push services of browsers (RFC 8030)
// with encrypted payloads (RFC 8291) and VAPID (RFC 8292).
type WebPushProvider struct {
	pub, priv string
	subject   string // as webpush-go wants it: without "mailto:"
	// allowPrivate: AllowPrivateEndpoints.
	allowPrivate bool
	urgency      webpush.Urgency
	hc           *http.Client
	timeout      time.Duration
	log          *slog.Logger
}

// NewWebPush checks the VAPID keys and the subject.
func NewWebPush(cfg WebPushConfig) (*WebPushProvider, error) {
	pub, err := decodeB64(cfg.VAPIDPublicKey)
	if err != nil || len(pub) != 65 || pub[0] != 4 {
		return nil, fmt.Errorf("%w: webpush: the VAPID public key is not a base64url uncompressed P-256 point", ErrConfig)
	}
	priv, err := decodeB64(cfg.VAPIDPrivateKey)
	if err != nil || len(priv) != 32 {
		return nil, fmt.Errorf("%w: webpush: the VAPID private key is not a base64url 32-byte P-256 scalar", ErrConfig)
	}
	k, err := ecdh.P256().NewPrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("%w: webpush: VAPID private key: %w", ErrConfig, err)
	}
	if !bytes.Equal(k.PublicKey().Bytes(), pub) {
		return nil, fmt.Errorf("%w: webpush: the VAPID public key is not the private key's", ErrConfig)
	}
	var subject string
	switch {
	case strings.HasPrefix(cfg.Subject, "mailto:") && len(cfg.Subject) > len("mailto:"):
		// webpush-go adds "mailto:" to anything that is not https.
		subject = strings.TrimPrefix(cfg.Subject, "mailto:")
	case strings.HasPrefix(cfg.Subject, "https://") && len(cfg.Subject) > len("https://"):
		subject = cfg.Subject
	default:
		return nil, fmt.Errorf("%w: webpush: subject %q is neither mailto: nor https:", ErrConfig, cfg.Subject)
	}
	urg := webpush.UrgencyHigh
	if cfg.Urgency != "" {
		urg = webpush.Urgency(cfg.Urgency)
		switch urg {
		case webpush.UrgencyVeryLow, webpush.UrgencyLow, webpush.UrgencyNormal, webpush.UrgencyHigh:
		default:
			return nil, fmt.Errorf("%w: webpush: urgency %q", ErrConfig, cfg.Urgency)
		}
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = newHTTPClient(cfg.TLSConfig)
		if !cfg.AllowPrivateEndpoints && !httpsProxied() {
			// The connection itself, too: a host name checked before the
			// request may resolve elsewhere when it is dialed.
			tr := hc.Transport.(*http.Transport)
			tr.DialContext = (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second,
				Control: refusePrivateDial}).DialContext
		}
	}
	p := &WebPushProvider{
		pub: cfg.VAPIDPublicKey, priv: cfg.VAPIDPrivateKey,
		subject: subject, urgency: urg, hc: hc, allowPrivate: cfg.AllowPrivateEndpoints,
		timeout: cfg.RequestTimeout, log: orDiscard(cfg.Logger),
	}
	p.log.Info("push provider ready", "provider", "webpush", "subject", cfg.Subject)
	return p, nil
}

// decodeB64 reads base64url or standard base64, padded or not (what
// browsers and key tools give).
func decodeB64(s string) ([]byte, error) {
	s = strings.TrimRight(s, "=")
	if b, err := base64.RawURLEncoding.DecodeString(s); err == nil {
		return b, nil
	}
	return base64.RawStdEncoding.DecodeString(s)
}

// Close closes the idle connections.
func (p *WebPushProvider) Close() error {
	p.hc.CloseIdleConnections()
	return nil
}

// Name is "webpush".
func (p *WebPushProvider) Name() string { return string(WebPush) }

// webPushTopicMax is the longest Topic header (RFC 8030: 32 characters of
// the base64url alphabet).
const webPushTopicMax = 32

func isB64URL(r rune) bool {
	return r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_'
}

// Send encrypts n for the subscription and posts it to its endpoint.
func (p *WebPushProvider) Send(ctx context.Context, d Device, n Notification) (Result, error) {
	const name = "webpush"
	if d.Platform != WebPush {
		return rejectResult(name, fmt.Errorf("%w: platform %q", ErrInvalidDevice, d.Platform))
	}
	if err := checkSubscription(d); err != nil {
		return rejectResult(name, err)
	}
	_, left, ok := ttl(n, time.Now())
	if !ok {
		return rejectResult(name, ErrExpired)
	}
	if !p.allowPrivate {
		if err := checkPublicEndpoint(ctx, d.Endpoint); err != nil {
			var res Result
			if errors.Is(err, errPrivateEndpoint) {
				res = Result{Outcome: DeadToken, Reason: "private endpoint"}
				err = errFor(res, name, err)
			} else {
				res, err = transportResult(name, err)
			}
			logFailure(p.log, name, redactEndpoint(d.Endpoint), res, err)
			return res, err
		}
	}
	pl := WebPushPayload{
		Title: n.Title, Body: truncate(n.Body, MaxBodyBytes), Badge: n.Badge,
		Tag: n.CollapseID, ThreadID: n.ThreadID,
		MessageID: n.MessageID, ConversationID: n.ConversationID, Data: n.Data,
	}
	msg, err := json.Marshal(pl)
	if err != nil {
		return rejectResult(name, err)
	}

	ctx, cancel := withTimeout(ctx, p.timeout)
	defer cancel()
	sub := &webpush.Subscription{Endpoint: d.Endpoint, Keys: webpush.Keys{P256dh: d.P256dh, Auth: d.Auth}}
	secs := int(left / time.Second)
	resp, err := webpush.SendNotificationWithContext(ctx, msg, sub, &webpush.Options{
		HTTPClient:      p.hc,
		Subscriber:      p.subject,
		Topic:           collapseKey(n.CollapseID, webPushTopicMax, isB64URL),
		TTL:             secs,
		Urgency:         p.urgency,
		VAPIDPublicKey:  p.pub,
		VAPIDPrivateKey: p.priv,
	})
	if err != nil {
		var res Result
		var ue *url.Error
		switch {
		case errors.Is(err, errPrivateEndpoint): // the dial found it
			res = Result{Outcome: DeadToken, Reason: "private endpoint"}
			err = errFor(res, name, err)
		case errors.As(err, &ue):
			res, err = transportResult(name, err)
		case errors.Is(err, webpush.ErrMaxPadExceeded):
			res, err = rejectResult(name, fmt.Errorf("payload of %d bytes too large: %w", len(msg), err))
		default:
			res, err = rejectResult(name, fmt.Errorf("encrypting: %w", err))
		}
		logFailure(p.log, name, redactEndpoint(d.Endpoint), res, err)
		return res, err
	}
	// Read a little of the answer so that the connection is reused.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	resp.Body.Close()
	res := Result{Status: resp.StatusCode, ID: resp.Header.Get("Location")}
	if ra, ok := ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now()); ok {
		res.RetryAfter = ra
	}
	switch resp.StatusCode {
	case http.StatusNotFound, http.StatusGone:
		res.Outcome = DeadToken
	default:
		res.Outcome = classifyHTTP(resp.StatusCode)
	}
	if res.Outcome == Delivered {
		return res, nil
	}
	err = errFor(res, name, nil)
	logFailure(p.log, name, redactEndpoint(d.Endpoint), res, err)
	return res, err
}

// redactEndpoint keeps the push service of a subscription endpoint and
// hides the subscription's path (a bearer capability).
func redactEndpoint(ep string) string {
	u, err := url.Parse(ep)
	if err != nil || u.Host == "" {
		return Redact(ep)
	}
	return u.Scheme + "://" + u.Host + "/" + Redact(strings.TrimPrefix(u.EscapedPath(), "/"))
}

// checkSubscription validates a Web Push subscription: an https
// endpoint, a P-256 public key and a 16-byte auth secret.
func checkSubscription(d Device) error {
	u, err := url.Parse(d.Endpoint)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return fmt.Errorf("%w: Web Push endpoint is not an https URL", ErrInvalidDevice)
	}
	key, err := decodeB64(d.P256dh)
	if err != nil {
		return fmt.Errorf("%w: p256dh is not base64url", ErrInvalidDevice)
	}
	if _, err := ecdh.P256().NewPublicKey(key); err != nil {
		return fmt.Errorf("%w: p256dh is not a P-256 point", ErrInvalidDevice)
	}
	auth, err := decodeB64(d.Auth)
	if err != nil || len(auth) != 16 {
		return fmt.Errorf("%w: auth is not a base64url 16-byte secret", ErrInvalidDevice)
	}
	return nil
}

// errPrivateEndpoint: a subscription endpoint on a non-public address.
var errPrivateEndpoint = errors.New("the endpoint is on a loopback, private or other non-public address")

// publicAddr reports whether a is an address of the public internet:
// not loopback, private (RFC 1918, fc00::/7), link-local (169.254/16: the
// cloud metadata services), shared (100.64/10), unspecified or multicast.
func publicAddr(a netip.Addr) bool {
	a = a.Unmap()
	return a.IsValid() && !a.IsLoopback() && !a.IsPrivate() && !a.IsLinkLocalUnicast() && !a.IsLinkLocalMulticast() &&
		!a.IsInterfaceLocalMulticast() && !a.IsMulticast() && !a.IsUnspecified() &&
		!netip.MustParsePrefix("100.64.0.0/10").Contains(a) && !netip.MustParsePrefix("0.0.0.0/8").Contains(a)
}

// checkPublicEndpoint wraps errPrivateEndpoint when the endpoint's host
// is, or resolves to, an address that is not public; other errors are a
// failed lookup.
func checkPublicEndpoint(ctx context.Context, endpoint string) error {
	u, err := url.Parse(endpoint)
	if err != nil {
		return err
	}
	host := u.Hostname()
	if a, err := netip.ParseAddr(host); err == nil {
		if !publicAddr(a) {
			return fmt.Errorf("%w: %s", errPrivateEndpoint, a)
		}
		return nil
	}
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return fmt.Errorf("looking up the endpoint's host: %w", err)
	}
	for _, a := range addrs {
		if !publicAddr(a) {
			return fmt.Errorf("%w: %s is %s", errPrivateEndpoint, host, a)
		}
	}
	return nil
}

// refusePrivateDial is a net.Dialer Control that refuses non-public
// addresses.
func refusePrivateDial(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: %s", errPrivateEndpoint, address)
	}
	if !publicAddr(ap.Addr()) {
		return fmt.Errorf("%w: %s", errPrivateEndpoint, ap.Addr())
	}
	return nil
}

// httpsProxied reports whether requests go through an HTTPS proxy of the
// environment: the connection is then to the proxy (an address of the
// operator's choosing, often private), and only the endpoint's host is
// checked.
func httpsProxied() bool {
	return os.Getenv("HTTPS_PROXY") != "" || os.Getenv("https_proxy") != ""
}

var _ Provider = (*WebPushProvider)(nil)
