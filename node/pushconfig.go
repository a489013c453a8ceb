package node

import (
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/edgechat/edgechat/services/push"
)

// Push defaults and the named APNs endpoints.
const (
	APNsProduction        = "production"
	APNsDevelopment       = "development"
	DefaultFCMEndpoint    = "https://fcm.googleapis.com"
	DefaultPushGrace      = 5 * time.Second
	DefaultPushGroupLimit = 100
	DefaultPushAckTimeout = 10 * time.Second
	maxPushGrace          = time.Hour
	// minPushAckTimeout: below it a healthy phone's acknowledgement, a
	// round trip away on a mobile network, comes after the bound, and
	// every message is pushed to devices that have it (0 is off).
	minPushAckTimeout = time.Second
	maxPushAckTimeout = 10 * time.Minute
	maxPushGroupLimit = 1_000_000
)

var pushSettings = []setting{
	{name: "apns-key-file", usage: "APNs token auth: the .p8 signing key file (with --apns-key-id and --apns-team-id)", set: stringSetter(func(c *Config) *string { return &c.APNsKeyFile })},
	{name: "apns-key-id", usage: "APNs token auth: the key ID (10 characters)", set: stringSetter(func(c *Config) *string { return &c.APNsKeyID })},
	{name: "apns-team-id", usage: "APNs token auth: the Apple developer team ID (10 characters)", set: stringSetter(func(c *Config) *string { return &c.APNsTeamID })},
	{name: "apns-topic", usage: "APNs topic: the app's bundle ID (required with APNs)", set: stringSetter(func(c *Config) *string { return &c.APNsTopic })},
	{name: "apns-cert-file", usage: "APNs certificate auth: the .p12 certificate file (instead of a .p8 key)", set: stringSetter(func(c *Config) *string { return &c.APNsCertFile })},
	{name: "apns-cert-password", usage: "APNs certificate auth: the .p12 password", set: stringSetter(func(c *Config) *string { return &c.APNsCertPassword })},
	{name: "apns-endpoint", usage: "APNs endpoint: production, development or a URL", set: stringSetter(func(c *Config) *string { return &c.APNsEndpoint })},
	{name: "fcm-credentials-file", usage: "FCM HTTP v1: the Google service-account JSON file (enables FCM)", set: stringSetter(func(c *Config) *string { return &c.FCMCredentialsFile })},
	{name: "fcm-endpoint", usage: "FCM HTTP v1 base URL", set: stringSetter(func(c *Config) *string { return &c.FCMEndpoint })},
	{name: "webpush-subject", usage: "Web Push VAPID subject, mailto: or https: (enables Web Push; the key is generated)", set: stringSetter(func(c *Config) *string { return &c.WebPushSubject })},
	{name: "push-grace", usage: "how long an offline device waits for a message before it is pushed (0 pushes at once)", set: func(c *Config, v string) error {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return fmt.Errorf("not a duration >= 0: %q", v)
		}
		c.PushGrace = d
		return nil
	}},
	{name: "push-ack-timeout", usage: "how long a connected device has to acknowledge a message before it is pushed as if offline (a half-open connection; 0 never pushes a connected device)", set: func(c *Config, v string) error {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return fmt.Errorf("not a duration >= 0: %q", v)
		}
		c.PushAckTimeout = d
		return nil
	}},
	{name: "push-group-limit", usage: "groups with more members push only mentions and replies (and to members who opted in)", set: func(c *Config, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil {
			return fmt.Errorf("not a number: %q", v)
		}
		c.PushGroupLimit = n
		return nil
	}},
}

// APNsEnabled, FCMEnabled and WebPushEnabled report whether a push
// provider is configured.
func (c Config) APNsEnabled() bool    { return c.APNsKeyFile != "" || c.APNsCertFile != "" }
func (c Config) FCMEnabled() bool     { return c.FCMCredentialsFile != "" }
func (c Config) WebPushEnabled() bool { return c.WebPushSubject != "" }

// PushPlatforms lists the platforms (push.PlatformAPNs, ...) whose
// provider is configured.
func (c Config) PushPlatforms() []string {
	var out []string
	for _, p := range []struct {
		on       bool
		platform string
	}{{c.APNsEnabled(), push.PlatformAPNs}, {c.FCMEnabled(), push.PlatformFCM}, {c.WebPushEnabled(), push.PlatformWebPush}} {
		if p.on {
			out = append(out, p.platform)
		}
	}
	return out
}

// validatePush checks the push settings: each provider's settings go
// together, files exist, endpoints and the VAPID subject are URLs.
func (c Config) validatePush() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrConfig}, a...)...)
	}
	switch {
	case c.APNsKeyFile != "" && c.APNsCertFile != "":
		return bad("--apns-key-file and --apns-cert-file exclude each other (token or certificate auth)")
	case c.APNsKeyFile != "" && (!appleID(c.APNsKeyID) || !appleID(c.APNsTeamID)):
		return bad("--apns-key-file needs --apns-key-id and --apns-team-id (10 letters or digits each)")
	case c.APNsKeyFile == "" && (c.APNsKeyID != "" || c.APNsTeamID != ""):
		return bad("--apns-key-id and --apns-team-id need --apns-key-file")
	case c.APNsCertPassword != "" && c.APNsCertFile == "":
		return bad("--apns-cert-password needs --apns-cert-file")
	case c.APNsEnabled() && c.APNsTopic == "":
		return bad("APNs needs --apns-topic (the app's bundle ID)")
	case !c.APNsEnabled() && c.APNsTopic != "":
		return bad("--apns-topic needs --apns-key-file or --apns-cert-file")
	}
	for flag, f := range map[string]string{"apns-key-file": c.APNsKeyFile, "apns-cert-file": c.APNsCertFile, "fcm-credentials-file": c.FCMCredentialsFile} {
		if f == "" {
			continue
		}
		if st, err := os.Stat(f); err != nil || !st.Mode().IsRegular() {
			return bad("--%s %q: not a readable file", flag, f)
		}
	}
	switch c.APNsEndpoint {
	case "", APNsProduction, APNsDevelopment:
	default:
		if !httpURL(c.APNsEndpoint) {
			return bad("--apns-endpoint %q: want production, development or an http(s) URL", c.APNsEndpoint)
		}
	}
	if c.FCMEndpoint != "" && !httpURL(c.FCMEndpoint) {
		return bad("--fcm-endpoint %q: want an http(s) URL", c.FCMEndpoint)
	}
	if c.WebPushSubject != "" && !vapidSubject(c.WebPushSubject) {
		return bad("--webpush-subject %q: want mailto:address or an https: URL", c.WebPushSubject)
	}
	if c.PushGroupLimit < 1 || c.PushGroupLimit > maxPushGroupLimit {
		return bad("--push-group-limit %d: want 1 to %d", c.PushGroupLimit, maxPushGroupLimit)
	}
	return nil
}

// appleID checks a key or team ID: 10 letters or digits.
func appleID(s string) bool {
	if len(s) != 10 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

func httpURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "https" || u.Scheme == "http") && u.Host != ""
}

// vapidSubject accepts what RFC 8292 asks for: a mailto: or https: URI.
func vapidSubject(s string) bool {
	if addr, ok := strings.CutPrefix(s, "mailto:"); ok {
		local, domain, ok := strings.Cut(addr, "@")
		return ok && local != "" && domain != "" && !strings.ContainsAny(addr, " \t\r\n")
	}
	u, err := url.Parse(s)
	return err == nil && u.Scheme == "https" && u.Host != ""
}
