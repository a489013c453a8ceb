// Package idp lets users sign in with external OpenID Connect identity
// providers (Keycloak, Dex, Google, Entra, ...): per provider a lazily
// discovered ID-token verifier (go-oidc) over a JWKS cache that refetches
// on an unknown kid at a bounded rate and expires, so that a key the
// provider rotated in works at once and a key it removed stops working;
// and the HTTP endpoint that exchanges a provider's JWT for edgechat's
// own tokens (POST /auth/oidc/{provider}/token). Accounts and their links
// to (issuer, subject) belong to the auth service (Accounts).
package idp

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Claims that may name the user (ProviderConfig.UsernameClaim).
const (
	ClaimPreferredUsername = "preferred_username"
	ClaimEmail             = "email"
	ClaimSub               = "sub"
)

// Defaults.
const (
	DefaultName          = "oidc"
	DefaultUsernameClaim = ClaimPreferredUsername
	// DefaultSkew is the clock difference tolerated on exp, nbf and iat.
	DefaultSkew = time.Minute
	// DefaultJWKSMinRefetch is the least time between two fetches of a
	// provider's JWKS caused by tokens with an unknown kid.
	DefaultJWKSMinRefetch = 10 * time.Second
	// DefaultJWKSMaxAge is how long fetched keys are used before the JWKS
	// is fetched again (so that keys the provider removed stop working).
	DefaultJWKSMaxAge = time.Hour
	// DefaultJWKSStaleFor is how long past DefaultJWKSMaxAge keys are
	// still used while the provider cannot be reached.
	DefaultJWKSStaleFor = 24 * time.Hour
)

// DefaultScopes are requested in the code flow when none are configured.
var DefaultScopes = []string{"openid", "profile", "email"}

// ErrConfig marks a provider configuration error.
var ErrConfig = errors.New("oidc: invalid provider configuration")

// ProviderConfig is one identity provider as configured (YAML list
// oidc_providers, or the --oidc-* flags for a single one).
type ProviderConfig struct {
	// Name is used in URLs: /auth/oidc/{name}/token.
	Name string `yaml:"name"`
	// Issuer is the provider's issuer URL; discovery reads
	// {issuer}/.well-known/openid-configuration.
	Issuer   string `yaml:"issuer"`
	ClientID string `yaml:"client_id"`
	// ClientSecretFile holds the client secret (for the code flow of a
	// confidential client); empty: a public client (PKCE only).
	ClientSecretFile string `yaml:"client_secret_file"`
	// Audience a token must name in "aud"; default ClientID.
	Audience string   `yaml:"audience"`
	Scopes   []string `yaml:"scopes"`
	// UsernameClaim picks the claim that names new users:
	// preferred_username (default), email (its local part) or sub.
	UsernameClaim string `yaml:"username_claim"`
	// RequiredClaim and RequiredValue, together: only tokens whose claim
	// equals the value (or, for a list such as groups, contains it) get in.
	RequiredClaim string `yaml:"required_claim"`
	RequiredValue string `yaml:"required_value"`
	// Redirects is the allow-list of where the code flow may send the
	// user back to (exact URLs).
	Redirects []string `yaml:"redirects"`
	// CallbackURL is this server's callback as registered at the
	// provider (https://chat.example.com/auth/oidc/NAME/callback); default:
	// derived from each /start request's host.
	CallbackURL string `yaml:"callback_url"`
	// AcceptOnConnect lets MQTT CONNECT take this provider's JWT as the
	// password (username = the mapped user ID).
	AcceptOnConnect bool `yaml:"accept_on_connect"`
	// CAFile is a PEM bundle of CAs trusted for this provider's HTTPS
	// (besides the system's); for a provider with a private CA.
	CAFile string `yaml:"ca_file"`
	// Skew, JWKSMinRefetch, JWKSMaxAge: zero takes the defaults.
	Skew           time.Duration `yaml:"clock_skew"`
	JWKSMinRefetch time.Duration `yaml:"jwks_min_refetch"`
	JWKSMaxAge     time.Duration `yaml:"jwks_max_age"`
}

var nameRE = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,31}$`)

// claimRE bounds a required claim's name.
var claimRE = regexp.MustCompile(`^[A-Za-z0-9_.:/-]{1,64}$`)

// WithDefaults returns c with zero fields set to their defaults.
func (c ProviderConfig) WithDefaults() ProviderConfig {
	if c.Name == "" {
		c.Name = DefaultName
	}
	if c.Audience == "" {
		c.Audience = c.ClientID
	}
	if len(c.Scopes) == 0 {
		c.Scopes = slices.Clone(DefaultScopes)
	}
	if c.UsernameClaim == "" {
		c.UsernameClaim = DefaultUsernameClaim
	}
	if c.Skew == 0 {
		c.Skew = DefaultSkew
	}
	if c.JWKSMinRefetch == 0 {
		c.JWKSMinRefetch = DefaultJWKSMinRefetch
	}
	if c.JWKSMaxAge == 0 {
		c.JWKSMaxAge = DefaultJWKSMaxAge
	}
	return c
}

// isLoopback reports whether host is localhost or a loopback address.
func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Validate checks one provider (after WithDefaults). Errors wrap ErrConfig
// and name the provider and the field.
func (c ProviderConfig) Validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: provider %q: %s", ErrConfig, c.Name, fmt.Sprintf(format, a...))
	}
	if !nameRE.MatchString(c.Name) {
		return fmt.Errorf("%w: provider name %q: want 1-32 of a-z, 0-9, '_', '-', starting with a letter", ErrConfig, c.Name)
	}
	if c.Issuer == "" {
		return bad("issuer is required")
	}
	u, err := url.Parse(c.Issuer)
	switch {
	case err != nil || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "":
		return bad("issuer %q: want an https:// URL without query or fragment", c.Issuer)
	case u.Scheme == "http" && isLoopback(u.Hostname()):
		// plain HTTP only on the loopback (a provider on the same box, tests)
	case u.Scheme != "https":
		return bad("issuer %q: want https:// (http:// only on localhost)", c.Issuer)
	}
	if c.ClientID == "" {
		return bad("client_id is required")
	}
	if strings.ContainsAny(c.ClientID, " \t\r\n") || len(c.ClientID) > 256 {
		return bad("client_id %q: no spaces, at most 256 bytes", c.ClientID)
	}
	if len(c.Audience) > 256 {
		return bad("audience: at most 256 bytes")
	}
	switch c.UsernameClaim {
	case ClaimPreferredUsername, ClaimEmail, ClaimSub:
	default:
		return bad("username_claim %q: want preferred_username, email or sub", c.UsernameClaim)
	}
	if (c.RequiredClaim == "") != (c.RequiredValue == "") {
		return bad("required_claim and required_value go together")
	}
	if c.RequiredClaim != "" && !claimRE.MatchString(c.RequiredClaim) {
		return bad("required_claim %q: want 1-64 of A-Z, a-z, 0-9, '_', '.', ':', '/', '-'", c.RequiredClaim)
	}
	if !slices.Contains(c.Scopes, "openid") {
		return bad("scopes %q: must include openid", c.Scopes)
	}
	for _, s := range c.Scopes {
		if s == "" || strings.ContainsAny(s, " \t\r\n\"") {
			return bad("scope %q: one word each", s)
		}
	}
	for _, r := range c.Redirects {
		if err := validRedirect(r); err != nil {
			return bad("redirect %q: %v", r, err)
		}
	}
	if c.CallbackURL != "" {
		if err := validRedirect(c.CallbackURL); err != nil || !strings.HasPrefix(c.CallbackURL, "http") {
			return bad("callback_url %q: want an https:// URL (http:// on localhost)", c.CallbackURL)
		}
		// Where the provider sends the browser back: only this path is
		// served, and only to it does the browser send the login's state
		// cookie (Path=/auth/oidc/{name}/).
		if u, err := url.Parse(c.CallbackURL); err != nil || u.Path != "/auth/oidc/"+c.Name+"/callback" {
			return bad("callback_url %q: its path must be /auth/oidc/%s/callback, where this server answers the provider", c.CallbackURL, c.Name)
		}
	}
	if c.Skew < 0 || c.Skew > 10*time.Minute {
		return bad("clock_skew %v: want 0 to 10m", c.Skew)
	}
	if c.JWKSMinRefetch < 0 || c.JWKSMinRefetch > time.Hour {
		return bad("jwks_min_refetch %v: want 0 to 1h", c.JWKSMinRefetch)
	}
	if c.JWKSMaxAge < time.Minute && c.JWKSMaxAge != 0 {
		return bad("jwks_max_age %v: want at least 1m", c.JWKSMaxAge)
	}
	return nil
}

// validRedirect accepts an absolute URL: https, http on the loopback, or
// an app's own scheme (com.example.app:/callback); no fragment.
func validRedirect(r string) error {
	u, err := url.Parse(r)
	if err != nil || u.Scheme == "" || u.Fragment != "" || len(r) > 2048 {
		return errors.New("want an absolute URL without a fragment")
	}
	switch u.Scheme {
	case "https":
		if u.Host == "" {
			return errors.New("https URL without a host")
		}
	case "http":
		if !isLoopback(u.Hostname()) {
			return errors.New("http:// only on localhost; use https://")
		}
	case "javascript", "data", "file", "vbscript":
		return fmt.Errorf("scheme %q is not allowed", u.Scheme)
	}
	return nil
}

// ValidateAll checks a list of providers (after WithDefaults): each one,
// and that no two share a name or an issuer.
func ValidateAll(list []ProviderConfig) error {
	names, issuers := map[string]bool{}, map[string]string{}
	for _, c := range list {
		if err := c.Validate(); err != nil {
			return err
		}
		if names[c.Name] {
			return fmt.Errorf("%w: two providers named %q", ErrConfig, c.Name)
		}
		names[c.Name] = true
		iss := strings.TrimSuffix(c.Issuer, "/")
		if other, ok := issuers[iss]; ok {
			return fmt.Errorf("%w: providers %q and %q have the same issuer %s", ErrConfig, other, c.Name, c.Issuer)
		}
		issuers[iss] = c.Name
	}
	return nil
}
