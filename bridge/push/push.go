// Package push is the provider layer of the push bridge: it sends one
// notification to one device through Apple Push Notification service
// (APNs), Firebase Cloud Messaging (FCM HTTP v1) or Web Push (RFC 8030
// with RFC 8291 payload encryption and RFC 8292 VAPID), and classifies
// the provider's answer so that the queue above knows what to do next:
//
//   - Delivered: the provider accepted the notification.
//   - DeadToken: the device registration is gone (APNs 410 Unregistered
//     or 400 BadDeviceToken, FCM UNREGISTERED or INVALID_ARGUMENT on the
//     token, Web Push 404 or 410); remove it.
//   - RetryLater: 429, 5xx, a transport error, a timeout or an answer
//     that could not be read; send again later, not before
//     Result.RetryAfter when the provider gave one.
//   - Failed: any other refusal (other 4xx, a payload too large, an
//     expired notification); retrying the same request will not help.
//
// Every provider implements [Provider]; [Router] picks one by
// [Device.Platform]. Send returns a nil error exactly when the outcome is
// Delivered; otherwise the error wraps one of [ErrDeadToken],
// [ErrRetryLater] or [ErrRejected] (test with errors.Is), and sometimes
// a more precise cause such as [ErrBadResponse], [ErrInvalidDevice],
// [ErrExpired] or a context error.
//
// Above the providers, the decision core (decide.go) says who is pushed
// for a committed message and with what, as pure functions of what the
// caller passes in, the time included: [Candidates] picks the recipients
// that may be pushed at all (never the sender; in a group larger than the
// group limit only mentions, replies and members who opted in), [Decide]
// gives a device's [Verdict] when the grace period ends (not when it is
// connected, the conversation is muted or read up to the message, during
// [DND], or a day after the commit), and [Build] makes the
// [Notification] (title, preview, badge, per-conversation collapse and
// thread IDs, expiry). It does no I/O and reads no clock, so that the
// sender around it is the only part that needs a cluster to test.
//
// The layer has no process-wide state: each provider owns its HTTP client
// (kept and reused; HTTP/2 for APNs), its credentials and its logger. The
// endpoints and the TLS trust are configurable so that tests can point
// the providers at the mocks of package pushtest; there are no other
// test-only paths. Device tokens are never logged in full ([Redact]) and
// message text is never logged.
package push

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Platform names a push service; the values are those of the device
// registration API.
type Platform string

// The platforms.
const (
	APNs    Platform = "apns"
	FCM     Platform = "fcm"
	WebPush Platform = "webpush"
)

// Device is one push registration: where a notification goes.
type Device struct {
	Platform Platform

	// Token is the APNs device token (hex) or the FCM registration token.
	Token string
	// Topic is the APNs topic (the app's bundle ID, the registration's
	// appId); empty means the provider's default topic.
	Topic string
	// Sandbox sends an APNs notification to the development environment
	// (an app built for development has a sandbox token).
	Sandbox bool

	// Endpoint, P256dh and Auth are a Web Push subscription: the push
	// service URL (https), the browser's P-256 public key (uncompressed
	// point) and its 16-byte auth secret, both base64url as browsers give
	// them.
	Endpoint string
	P256dh   string
	Auth     string
}

// Notification is what is shown on the device.
type Notification struct {
	Title string
	// Body is the text preview; longer than MaxBodyBytes is cut (at a
	// character boundary, with an ellipsis).
	Body string
	// Badge is the unread count shown on the app icon; nil leaves it as
	// it is.
	Badge *int
	// Sound is the APNs/Android sound name ("default"); empty is silent.
	Sound string
	// CollapseID makes a newer notification replace an older one with the
	// same ID (one per conversation): APNs apns-collapse-id, FCM
	// collapse_key, Web Push Topic. An ID longer than a provider accepts
	// is replaced by a hash of it.
	CollapseID string
	// ThreadID groups notifications on the device (one per conversation):
	// APNs thread-id, Android notification tag.
	ThreadID string
	// MessageID and ConversationID go into the custom data (keys
	// "messageId" and "conversationId") so that a tap opens the
	// conversation.
	MessageID      string
	ConversationID string
	// Data is more custom data (string values, as FCM requires).
	Data map[string]string
	// Expiry is when the notification is no longer worth delivering; zero
	// means DefaultTTL from the send. A notification already expired is
	// not sent (ErrExpired).
	Expiry time.Time
	// MutableContent lets an iOS notification service extension change
	// the notification (fetch or decrypt richer content).
	MutableContent bool
}

// Limits and defaults shared by the providers.
const (
	// DefaultTTL is how long a provider keeps a notification it cannot
	// deliver yet when Notification.Expiry is zero.
	DefaultTTL = 24 * time.Hour
	// MaxBodyBytes is where a body is cut: every provider limits the
	// whole payload to about 4 KB.
	MaxBodyBytes = 1024
	// DefaultRequestTimeout bounds one send when the caller's context has
	// no earlier deadline.
	DefaultRequestTimeout = 30 * time.Second
	// maxRetryAfter caps a provider's Retry-After: a push older than a day
	// is not worth sending.
	maxRetryAfter = 24 * time.Hour
)

// Outcome classifies a provider's answer.
type Outcome int

// The outcomes.
const (
	// Delivered: the provider accepted the notification.
	Delivered Outcome = iota + 1
	// DeadToken: the registration is no longer valid; remove it.
	DeadToken
	// RetryLater: a transient failure; send again (after RetryAfter).
	RetryLater
	// Failed: refused for good; do not send this notification again.
	Failed
)

func (o Outcome) String() string {
	switch o {
	case Delivered:
		return "delivered"
	case DeadToken:
		return "dead_token"
	case RetryLater:
		return "retry"
	case Failed:
		return "failed"
	}
	return "unknown"
}

// Result is a provider's answer to one send.
type Result struct {
	Outcome Outcome
	// Status is the HTTP status of the answer (0 when there was none).
	Status int
	// Reason is the provider's reason code: the APNs reason
	// ("Unregistered"), the FCM error code ("UNREGISTERED") or status.
	Reason string
	// RetryAfter is the provider's Retry-After (0 when it gave none).
	RetryAfter time.Duration
	// ID is the provider's ID for the notification (apns-id, the FCM
	// message name, the Web Push message URL).
	ID string
	// InvalidSince is, for an APNs 410, when APNs last saw the token
	// invalid: a registration refreshed after it is still good.
	InvalidSince time.Time
}

// Sentinel errors. Every error from Send wraps exactly one of the first
// three.
var (
	// ErrDeadToken: the device registration is gone; remove it.
	ErrDeadToken = errors.New("push: dead device token")
	// ErrRetryLater: a transient failure; retry with backoff, honouring
	// Result.RetryAfter.
	ErrRetryLater = errors.New("push: temporary failure, retry later")
	// ErrRejected: the provider (or this layer) refused the notification
	// for good.
	ErrRejected = errors.New("push: rejected")

	// ErrBadResponse: the provider's answer could not be understood
	// (wrapped together with ErrRetryLater).
	ErrBadResponse = errors.New("push: unreadable provider answer")
	// ErrInvalidDevice: the device lacks what its platform needs, or has
	// another platform (wrapped together with ErrRejected).
	ErrInvalidDevice = errors.New("push: invalid device")
	// ErrExpired: the notification expired before it was sent (wrapped
	// together with ErrRejected).
	ErrExpired = errors.New("push: notification expired")
	// ErrNoProvider: no provider is configured for the device's platform
	// (wrapped together with ErrRejected).
	ErrNoProvider = errors.New("push: no provider for platform")
	// ErrConfig: a provider's configuration is unusable (from the New
	// functions).
	ErrConfig = errors.New("push: bad configuration")
)

// Provider sends notifications through one push service. Send is safe for
// concurrent use; it returns when the provider has answered, ctx is done
// or the provider's request timeout passed. err is nil exactly when
// res.Outcome is Delivered.
type Provider interface {
	Name() string
	Send(ctx context.Context, d Device, n Notification) (Result, error)
}

// Router sends through the provider of the device's platform.
type Router struct {
	providers map[Platform]Provider
}

// NewRouter routes each platform to its provider; a nil provider (not
// configured) is skipped.
func NewRouter(providers map[Platform]Provider) *Router {
	r := &Router{providers: make(map[Platform]Provider, len(providers))}
	for p, prov := range providers {
		if prov != nil {
			r.providers[p] = prov
		}
	}
	return r
}

// Enabled reports whether a provider is configured for p.
func (r *Router) Enabled(p Platform) bool {
	_, ok := r.providers[p]
	return ok
}

// Name is "router".
func (r *Router) Name() string { return "router" }

// Send sends through the provider of d.Platform; with none configured the
// outcome is Failed and the error wraps ErrNoProvider.
func (r *Router) Send(ctx context.Context, d Device, n Notification) (Result, error) {
	p, ok := r.providers[d.Platform]
	if !ok {
		return Result{Outcome: Failed}, fmt.Errorf("%w: %w %q", ErrRejected, ErrNoProvider, d.Platform)
	}
	return p.Send(ctx, d, n)
}

// Redact shortens a token, endpoint or key for logs: its first 6
// characters and its length.
func Redact(s string) string {
	if len(s) <= 6 {
		return fmt.Sprintf("%s…(%d)", strings.Repeat("*", len(s)), len(s))
	}
	return fmt.Sprintf("%s…(%d)", s[:6], len(s))
}

// ParseRetryAfter reads an HTTP Retry-After value, delay-seconds or an
// HTTP date, as a duration from now (0 for a date in the past, capped at
// a day). ok is false when v is empty or unreadable.
func ParseRetryAfter(v string, now time.Time) (d time.Duration, ok bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs < 0 {
			return 0, false
		}
		if secs > int64(maxRetryAfter/time.Second) {
			return maxRetryAfter, true
		}
		return time.Duration(secs) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	d = t.Sub(now)
	if d < 0 {
		d = 0
	}
	if d > maxRetryAfter {
		d = maxRetryAfter
	}
	return d.Round(time.Second), true
}

// classifyHTTP is the common part of the providers' classification: 429
// and 5xx are RetryLater, 2xx Delivered, anything else Failed. The
// callers decide dead tokens first.
func classifyHTTP(status int) Outcome {
	switch {
	case status >= 200 && status < 300:
		return Delivered
	case status == http.StatusTooManyRequests || status >= 500:
		return RetryLater
	default:
		return Failed
	}
}

// errFor builds the error for a non-delivered result.
func errFor(res Result, provider string, cause error) error {
	var what string
	switch {
	case res.Status != 0 && res.Reason != "":
		what = fmt.Sprintf("%s answered %d %s", provider, res.Status, res.Reason)
	case res.Status != 0:
		what = fmt.Sprintf("%s answered %d", provider, res.Status)
	default:
		what = provider
	}
	sentinel := ErrRejected
	switch res.Outcome {
	case Delivered:
		return nil
	case DeadToken:
		sentinel = ErrDeadToken
	case RetryLater:
		sentinel = ErrRetryLater
	}
	if cause != nil {
		return fmt.Errorf("%w: %s: %w", sentinel, what, cause)
	}
	return fmt.Errorf("%w: %s", sentinel, what)
}

// transportResult classifies an error from the HTTP round trip: a
// transport failure or a timeout is RetryLater.
func transportResult(provider string, err error) (Result, error) {
	res := Result{Outcome: RetryLater}
	return res, errFor(res, provider, scrubURL(err))
}

// scrubURL replaces the URL of a *url.Error, which holds the device token
// (APNs) or the subscription's secret path (Web Push), by its host only.
func scrubURL(err error) error {
	var ue *url.Error
	if !errors.As(err, &ue) {
		return err
	}
	host := "?"
	if u, perr := url.Parse(ue.URL); perr == nil {
		host = u.Scheme + "://" + u.Host
	}
	return fmt.Errorf("%s %s/…: %w", ue.Op, host, ue.Err)
}

// rejectResult is a Failed result for a problem found before any request.
func rejectResult(provider string, cause error) (Result, error) {
	res := Result{Outcome: Failed}
	return res, errFor(res, provider, cause)
}

// ttl is how long the provider should keep n, from now; ok is false when
// n has already expired.
func ttl(n Notification, now time.Time) (exp time.Time, d time.Duration, ok bool) {
	exp = n.Expiry
	if exp.IsZero() {
		exp = now.Add(DefaultTTL)
	}
	d = exp.Sub(now)
	if d <= 0 {
		return exp, 0, false
	}
	return exp, d, true
}

// truncate cuts s to at most max bytes at a rune boundary, ending in an
// ellipsis when it was cut.
func truncate(s string, max int) string {
	if len(s) <= max {
		return s
	}
	const ell = "…"
	cut := max - len(ell)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + ell
}

// collapseKey returns id when it has at most max characters of the
// alphabet ok accepts, else a stable hash of it (base64url of SHA-256,
// cut to max).
func collapseKey(id string, max int, ok func(rune) bool) string {
	if id == "" {
		return ""
	}
	if len(id) <= max && strings.IndexFunc(id, func(r rune) bool { return !ok(r) }) < 0 {
		return id
	}
	sum := sha256.Sum256([]byte(id))
	h := base64.RawURLEncoding.EncodeToString(sum[:])
	if len(h) > max {
		h = h[:max]
	}
	return h
}

// customData is the custom data of n: n.Data plus messageId and
// conversationId.
func customData(n Notification) map[string]string {
	if len(n.Data) == 0 && n.MessageID == "" && n.ConversationID == "" {
		return nil
	}
	m := make(map[string]string, len(n.Data)+2)
	for k, v := range n.Data {
		m[k] = v
	}
	if n.MessageID != "" {
		m["messageId"] = n.MessageID
	}
	if n.ConversationID != "" {
		m["conversationId"] = n.ConversationID
	}
	return m
}

// withTimeout applies the provider's request timeout unless ctx ends
// sooner.
func withTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if d <= 0 {
		d = DefaultRequestTimeout
	}
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= d {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, d)
}

// logFailure writes the one debug line of a failed send (the queue above
// logs and counts the outcome).
func logFailure(log *slog.Logger, provider, token string, res Result, err error) {
	if provider != string(WebPush) {
		token = Redact(token)
	} // a Web Push endpoint comes redacted (redactEndpoint)
	log.LogAttrs(context.Background(), slog.LevelDebug, "push send failed",
		slog.String("provider", provider),
		slog.String("token", token),
		slog.String("outcome", res.Outcome.String()),
		slog.Int("status", res.Status),
		slog.String("reason", res.Reason),
		slog.Duration("retry_after", res.RetryAfter),
		slog.String("err", err.Error()))
}

// discardLogger is used when a config has no logger.
func orDiscard(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l
}
