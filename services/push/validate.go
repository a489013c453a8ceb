package push

import (
	"crypto/ecdh"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/edgechat/edgechat/internal/httpapi"
	"github.com/edgechat/edgechat/internal/wire"
)

// Platforms a device can register for.
const (
	PlatformAPNs    = "apns"
	PlatformFCM     = "fcm"
	PlatformWebPush = "webpush"
)

// Platforms lists every platform, in a stable order.
func Platforms() []string { return []string{PlatformAPNs, PlatformFCM, PlatformWebPush} }

// Limits of registrations.
const (
	MinAPNsToken    = 64   // hex characters (32 bytes today)
	MaxAPNsToken    = 200  // hex characters (Apple may grow tokens)
	MinFCMToken     = 32   // characters
	MaxFCMToken     = 1024 // characters (real tokens are about 160)
	MaxEndpoint     = 2048 // bytes of a Web Push endpoint URL
	MaxAppID        = 155  // characters of an app (bundle) ID
	MaxDevices      = 20   // registrations per user
	MaxMutes        = 1000 // muted conversations per user
	maxRegisterBody = 8 << 10
)

// Subscription is a browser's PushSubscription (its toJSON form).
type Subscription struct {
	Endpoint string `json:"endpoint"`
	// ExpirationTime is toJSON()'s expirationTime: null, or when the
	// subscription expires (milliseconds since the epoch). It is taken and
	// not kept: the push service answers an expired subscription 404 or
	// 410, which removes the registration.
	ExpirationTime *float64         `json:"expirationTime,omitempty"`
	Keys           SubscriptionKeys `json:"keys"`
}

// SubscriptionKeys are the subscription's encryption keys (RFC 8291),
// base64url: P256dh is the browser's uncompressed P-256 public key (65
// bytes), Auth the 16-byte authentication secret.
type SubscriptionKeys struct {
	P256dh string `json:"p256dh"`
	Auth   string `json:"auth"`
}

// Registration is the body of POST /user/me/devices.
type Registration struct {
	Device       string        `json:"device"`
	Platform     string        `json:"platform"`
	Token        string        `json:"token,omitempty"`   // apns (hex), fcm
	AppID        string        `json:"appId,omitempty"`   // apns: the bundle ID (apns-topic); default --apns-topic
	Sandbox      bool          `json:"sandbox,omitempty"` // apns: the development environment
	Subscription *Subscription `json:"subscription,omitempty"`
}

// decodeRegistration is the strict decoder of POST /user/me/devices
// bodies (fuzzed); it does not validate the fields (see Validate).
func decodeRegistration(body []byte) (Registration, error) {
	var r Registration
	err := httpapi.DecodeJSONBytes(body, &r)
	return r, err
}

// ValidDevice checks a device ID: the {deviceID} half of an MQTT client
// ID "{userID}/{deviceID}", with the rule of stored IDs
// (wire.ParseClientID), which the FSM applies to its entries: a
// registration stored before the rule of new device IDs still applies,
// and its device can be removed (see ValidNewDevice).
func ValidDevice(device string) error {
	if _, _, err := wire.ParseClientID("aaa/" + device); err != nil {
		return fmt.Errorf("%w: device %q: 1 to 64 printable characters without '/', '+' or '#'", ErrInvalidDevice, device)
	}
	return nil
}

// ValidNewDevice checks the device ID of a registration a client makes
// now (RegisterFrom): the rule of new device IDs (wire.ValidNewDeviceID:
// no C1 control, bidi, zero-width or other invisible character), which
// the FSM does not apply to entries (they may be older than the rule).
func ValidNewDevice(device string) error {
	if wire.ValidNewDeviceID(device) != nil {
		return fmt.Errorf("%w: device %q: %s", ErrInvalidDevice, device, wire.NewDeviceIDRule)
	}
	return nil
}

// Normalize validates r and returns it in canonical form (APNs tokens in
// lowercase, base64url keys without padding). Errors wrap one of
// ErrInvalidDevice, ErrInvalidPlatform, ErrInvalidToken or
// ErrInvalidSubscription.
func (r Registration) Normalize() (Registration, error) {
	if err := ValidDevice(r.Device); err != nil {
		return r, err
	}
	switch r.Platform {
	case PlatformAPNs:
		if r.Subscription != nil {
			return r, fmt.Errorf("%w: apns takes a token, not a subscription", ErrInvalidToken)
		}
		tok := strings.ToLower(r.Token)
		if len(tok) < MinAPNsToken || len(tok) > MaxAPNsToken || len(tok)%2 != 0 || !isHex(tok) {
			return r, fmt.Errorf("%w: apns token: %d to %d hex characters", ErrInvalidToken, MinAPNsToken, MaxAPNsToken)
		}
		r.Token = tok
		if r.AppID != "" && !validAppID(r.AppID) {
			return r, fmt.Errorf("%w: appId: 1 to %d characters of letters, digits, '.', '-' and '_'", ErrInvalidToken, MaxAppID)
		}
	case PlatformFCM:
		if r.Subscription != nil || r.Sandbox || r.AppID != "" {
			return r, fmt.Errorf("%w: fcm takes only a token", ErrInvalidToken)
		}
		if len(r.Token) < MinFCMToken || len(r.Token) > MaxFCMToken || !isFCMToken(r.Token) {
			return r, fmt.Errorf("%w: fcm token: %d to %d characters of letters, digits, '_', '-', ':' and '.'", ErrInvalidToken, MinFCMToken, MaxFCMToken)
		}
	case PlatformWebPush:
		if r.Token != "" || r.Sandbox || r.AppID != "" {
			return r, fmt.Errorf("%w: webpush takes only a subscription", ErrInvalidSubscription)
		}
		if r.Subscription == nil {
			return r, fmt.Errorf("%w: webpush needs a subscription", ErrInvalidSubscription)
		}
		sub, err := normalizeSubscription(*r.Subscription)
		if err != nil {
			return r, err
		}
		r.Subscription = &sub
	default:
		return r, fmt.Errorf("%w: %q (want apns, fcm or webpush)", ErrInvalidPlatform, r.Platform)
	}
	return r, nil
}

func normalizeSubscription(s Subscription) (Subscription, error) {
	if len(s.Endpoint) > MaxEndpoint {
		return s, fmt.Errorf("%w: endpoint over %d bytes", ErrInvalidSubscription, MaxEndpoint)
	}
	u, err := url.Parse(s.Endpoint)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || u.Fragment != "" || u.Hostname() == "" {
		return s, fmt.Errorf("%w: endpoint must be an https:// URL", ErrInvalidSubscription)
	}
	pub, err := decodeB64URL(s.Keys.P256dh)
	if err != nil || len(pub) != 65 || pub[0] != 4 {
		return s, fmt.Errorf("%w: p256dh must be an uncompressed P-256 point (65 bytes, base64url)", ErrInvalidSubscription)
	}
	if _, err := ecdh.P256().NewPublicKey(pub); err != nil {
		return s, fmt.Errorf("%w: p256dh is not a point on P-256", ErrInvalidSubscription)
	}
	auth, err := decodeB64URL(s.Keys.Auth)
	if err != nil || len(auth) != 16 {
		return s, fmt.Errorf("%w: auth must be 16 bytes, base64url", ErrInvalidSubscription)
	}
	if s.ExpirationTime != nil && *s.ExpirationTime < 0 {
		return s, fmt.Errorf("%w: expirationTime must be null or a time in milliseconds since the epoch", ErrInvalidSubscription)
	}
	s.ExpirationTime = nil
	s.Keys.P256dh = base64.RawURLEncoding.EncodeToString(pub)
	s.Keys.Auth = base64.RawURLEncoding.EncodeToString(auth)
	return s, nil
}

// decodeB64URL reads base64url with or without padding.
func decodeB64URL(s string) ([]byte, error) {
	return base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

func isFCMToken(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == ':' || c == '.') {
			return false
		}
	}
	return true
}

func validAppID(s string) bool {
	if len(s) > MaxAppID {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			return false
		}
	}
	return s != ""
}

// tokenOf is what identifies the physical device at its provider: the
// token, or a Web Push subscription's endpoint.
func (r Registration) tokenOf() string {
	if r.Platform == PlatformWebPush && r.Subscription != nil {
		return r.Subscription.Endpoint
	}
	return r.Token
}

// Conversation kinds of mutes: "user:{uid}" (a direct conversation with
// uid, "user:{name}@{region}" with a user of another region) or
// "group:{gid}" ("group:{gid}@{region}" for a group of another region):
// the names bridge/push gives the conversation of a message.
const (
	ConvUserPrefix  = "user:"
	ConvGroupPrefix = "group:"
)

// ValidConversation checks a conversation name of the mutes API.
func ValidConversation(conv string) error {
	switch {
	case strings.HasPrefix(conv, ConvUserPrefix):
		if wire.ValidPeerID(conv[len(ConvUserPrefix):]) == nil {
			return nil
		}
	case strings.HasPrefix(conv, ConvGroupPrefix):
		if wire.ValidGroupID(conv[len(ConvGroupPrefix):]) == nil {
			return nil
		}
	}
	return fmt.Errorf("%w: %q (want user:{uid}, user:{uid}@{region} or group:{gid})", ErrInvalidConversation, conv)
}

// DirectConversation and GroupConversation name conversations as the
// mutes API does.
func DirectConversation(peer string) string { return ConvUserPrefix + peer }
func GroupConversation(gid string) string   { return ConvGroupPrefix + gid }

// Preview preferences: what a push shows of a message.
const (
	PreviewFull   = "full"   // sender and text
	PreviewSender = "sender" // only who wrote ("New message" as the body)
	PreviewNone   = "none"   // "New message", no sender
)

// ValidPreview checks a preview preference.
func ValidPreview(p string) error {
	switch p {
	case PreviewFull, PreviewSender, PreviewNone:
		return nil
	}
	return fmt.Errorf("%w: %q (want full, sender or none)", ErrInvalidPreview, p)
}

// muteRequest is the optional body of PUT /user/me/mutes/{conversation}.
type muteRequest struct {
	Until *time.Time `json:"until,omitempty"`
}

// settingsRequest is the body of PUT /user/me/push. A field left out
// keeps its stored value (clients from before DND send only preview);
// DND is kept raw to tell "dnd": null (turn it off) from no "dnd".
type settingsRequest struct {
	Preview *string         `json:"preview"`
	DND     json.RawMessage `json:"dnd"`
}

// update converts the request, strictly decoding the DND window (unknown
// fields refused); a window of the right shape with a bad value is
// ErrInvalidDND.
func (r settingsRequest) update() (SettingsUpdate, error) {
	u := SettingsUpdate{Preview: r.Preview}
	if r.DND == nil {
		return u, nil
	}
	u.SetDND = true
	if string(r.DND) == "null" {
		return u, nil
	}
	var j dndJSON
	if err := httpapi.DecodeJSONBytes(r.DND, &j); err != nil {
		return u, err
	}
	d, err := j.parse()
	if err != nil {
		return u, err
	}
	u.DND = &d
	return u, nil
}
