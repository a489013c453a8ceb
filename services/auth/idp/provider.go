package idp

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
	"golang.org/x/sync/singleflight"
)

// Errors of verification. The specific ones wrap ErrInvalidToken, so a
// caller tests either.
var (
	ErrUnknownProvider     = errors.New("oidc: unknown identity provider")
	ErrProviderUnavailable = errors.New("oidc: identity provider unavailable")
	ErrInvalidToken        = errors.New("oidc: invalid token")
	ErrBadToken            = fmt.Errorf("%w: malformed, or signed with an algorithm not allowed", ErrInvalidToken)
	ErrBadSignature        = fmt.Errorf("%w: bad signature or unknown key", ErrInvalidToken)
	ErrWrongIssuer         = fmt.Errorf("%w: wrong issuer", ErrInvalidToken)
	ErrWrongAudience       = fmt.Errorf("%w: wrong audience", ErrInvalidToken)
	ErrExpired             = fmt.Errorf("%w: expired", ErrInvalidToken)
	ErrNotYetValid         = fmt.Errorf("%w: not valid yet (nbf or iat in the future)", ErrInvalidToken)
	ErrBadNonce            = fmt.Errorf("%w: nonce does not match", ErrInvalidToken)
	ErrNoSubject           = fmt.Errorf("%w: no subject", ErrInvalidToken)
	// ErrClaimRequired: a valid token without the claim the provider's
	// configuration requires (access refused, not a bad token).
	ErrClaimRequired = errors.New("oidc: a required claim is missing")
)

// Identity is what a verified token says of its user.
type Identity struct {
	Provider    string // the configured name
	Issuer      string
	Subject     string
	Username    string // the configured username claim's value (not yet a user ID)
	DisplayName string // "name"
	Picture     string // "picture" (an avatar URL)
	Email       string // "email", only when email_verified is not false
	Nonce       string
	IssuedAt    time.Time // "iat"; zero when the token has none
}

// discovered is a provider after discovery.
type discovered struct {
	issuer   string // as the provider writes it (the configured one but for a trailing slash)
	verifier *oidc.IDTokenVerifier
	// idVerifier checks the code flow's ID tokens: issued to this
	// server's client, their aud holds the client ID, whatever audience
	// is configured for the tokens apps exchange (verifier).
	idVerifier *oidc.IDTokenVerifier
	endpoint   oauth2.Endpoint
	jwksURL    string
	keys       *keySet
}

// Provider is one configured identity provider. Discovery is lazy and
// retried (a provider that is down does not stop the node from starting),
// at most once per retryEvery.
type Provider struct {
	cfg    ProviderConfig
	secret string // the client secret (code flow); "" for a public client
	client *http.Client
	log    *slog.Logger
	now    func() time.Time
	m      *metrics

	sf         singleflight.Group
	mu         sync.Mutex
	disc       *discovered
	lastTry    time.Time
	lastErr    error
	retryEvery time.Duration
}

// httpClient is the provider's HTTP client: base's transport (nil: the
// default one) trusting CAFile's CAs besides the system's.
func httpClient(cfg ProviderConfig, base *http.Client) (*http.Client, error) {
	if base != nil && cfg.CAFile == "" {
		return base, nil
	}
	if cfg.CAFile == "" {
		return &http.Client{Timeout: 15 * time.Second}, nil
	}
	pem, err := os.ReadFile(cfg.CAFile)
	if err != nil {
		return nil, fmt.Errorf("%w: provider %q: ca_file: %w", ErrConfig, cfg.Name, err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%w: provider %q: ca_file %s holds no PEM certificate", ErrConfig, cfg.Name, cfg.CAFile)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return &http.Client{Transport: tr, Timeout: 15 * time.Second}, nil
}

func newProvider(cfg ProviderConfig, client *http.Client, log *slog.Logger, now func() time.Time, m *metrics) *Provider {
	p := &Provider{cfg: cfg, client: client, log: log.With("provider", cfg.Name), now: now, m: m, retryEvery: 5 * time.Second}
	return p
}

// Name is the provider's configured name.
func (p *Provider) Name() string { return p.cfg.Name }

// Config is the provider's configuration (with defaults).
func (p *Provider) Config() ProviderConfig { return p.cfg }

// discover returns the provider's discovered state, running discovery
// when it has not succeeded yet (and was not tried in the last
// retryEvery).
func (p *Provider) discover(ctx context.Context) (*discovered, error) {
	p.mu.Lock()
	d, last, lastErr := p.disc, p.lastTry, p.lastErr
	p.mu.Unlock()
	if d != nil {
		return d, nil
	}
	if !last.IsZero() && p.now().Sub(last) < p.retryEvery {
		return nil, fmt.Errorf("%w: %s: %w", ErrProviderUnavailable, p.cfg.Name, lastErr)
	}
	ch := p.sf.DoChan("discover", func() (any, error) {
		d, err := p.runDiscovery(ctx)
		p.mu.Lock()
		defer p.mu.Unlock()
		p.lastTry = p.now()
		if err != nil {
			p.lastErr = err
			p.m.discoveries.WithLabelValues(p.cfg.Name, "error").Inc()
			p.log.Warn("OIDC discovery failed; will retry", "issuer", p.cfg.Issuer, "err", err)
			return nil, err
		}
		p.disc, p.lastErr = d, nil
		p.m.discoveries.WithLabelValues(p.cfg.Name, "ok").Inc()
		p.log.Info("OIDC provider discovered", "issuer", d.issuer, "jwks", d.jwksURL)
		return d, nil
	})
	// The discovery goes on without a caller that stops waiting (a CONNECT
	// or a request with a shorter deadline); the next caller shares it.
	select {
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: %s: discovery still running: %w", ErrProviderUnavailable, p.cfg.Name, ctx.Err())
	case r := <-ch:
		if r.Err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrProviderUnavailable, p.cfg.Name, r.Err)
		}
		return r.Val.(*discovered), nil
	}
}

func (p *Provider) runDiscovery(ctx context.Context) (*discovered, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
	defer cancel()
	issuer := p.cfg.Issuer
	op, err := oidc.NewProvider(oidc.ClientContext(ctx, p.client), issuer)
	var mismatch *oidc.IssuerMismatchError
	if errors.As(err, &mismatch) && mismatch.Discovered != "" &&
		strings.TrimSuffix(mismatch.Discovered, "/") == strings.TrimSuffix(issuer, "/") {
		// The provider spells its issuer with a trailing slash the
		// configuration lacks, or without the one it has (Auth0's ends in
		// "/", its domain as people copy it does not): the same provider.
		// Its own spelling is what its tokens' iss say.
		issuer = mismatch.Discovered
		op, err = oidc.NewProvider(oidc.InsecureIssuerURLContext(oidc.ClientContext(ctx, p.client), issuer), p.cfg.Issuer)
	}
	if err != nil {
		return nil, err
	}
	var meta struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if err := op.Claims(&meta); err != nil || meta.JWKSURI == "" {
		return nil, fmt.Errorf("oidc: discovery document of %s has no jwks_uri", p.cfg.Issuer)
	}
	if meta.Issuer != issuer {
		return nil, &oidc.IssuerMismatchError{Provided: issuer, Discovered: meta.Issuer}
	}
	if !strings.HasPrefix(meta.JWKSURI, "https://") && !strings.HasPrefix(p.cfg.Issuer, "http://") {
		return nil, fmt.Errorf("oidc: jwks_uri %q is not https", meta.JWKSURI)
	}
	ks := &keySet{url: meta.JWKSURI, client: p.client, now: p.now, minRefetch: p.cfg.JWKSMinRefetch,
		maxAge: p.cfg.JWKSMaxAge, staleFor: DefaultJWKSStaleFor, onFetch: func(err error) {
			result := "ok"
			if err != nil {
				result = "error"
				p.log.Warn("fetching the provider's JWKS failed", "url", meta.JWKSURI, "err", err)
			}
			p.m.jwksFetches.WithLabelValues(p.cfg.Name, result).Inc()
		}}
	verifier := func(aud string) *oidc.IDTokenVerifier {
		return oidc.NewVerifier(issuer, ks, &oidc.Config{
			ClientID:             aud,
			SupportedSigningAlgs: allowedAlgNames(),
			// exp and nbf are checked by verify, with the configured skew:
			// go-oidc's own check allows nbf a fixed 5 minutes against the
			// clock it is given, so that with the clock set skew behind (for
			// exp) and a skew over 5 minutes, it refused every token whose
			// nbf was the moment it was issued (Microsoft Entra ID's).
			SkipExpiryCheck: true,
		})
	}
	v, idv := verifier(p.cfg.Audience), verifier(p.cfg.ClientID)
	return &discovered{issuer: issuer, verifier: v, idVerifier: idv, endpoint: op.Endpoint(), jwksURL: meta.JWKSURI, keys: ks}, nil
}

// Warm runs discovery and fetches the JWKS, so that the first sign-in
// does not wait for them; errors are logged and retried on use.
func (p *Provider) Warm(ctx context.Context) error {
	d, err := p.discover(ctx)
	if err != nil {
		return err
	}
	_, err = d.keys.current(ctx)
	return err
}

type errSlotKey struct{}

// maxTokenBytes bounds a token presented for verification.
const maxTokenBytes = 16 << 10

// Verify checks a provider JWT (an ID token, or a JWT access token):
// signature with an allowed algorithm against the provider's JWKS, iss,
// aud, exp, nbf and iat within the skew, the subject, the required
// claim, and (when nonce is not empty) the nonce.
func (p *Provider) Verify(ctx context.Context, raw, nonce string) (Identity, error) {
	return p.observe(p.verify(ctx, raw, nonce, false))
}

// verifyIDToken is Verify for the ID token the code flow got from the
// token endpoint: its aud must hold the client ID (to whom it was
// issued), not the audience configured for exchanged tokens.
func (p *Provider) verifyIDToken(ctx context.Context, raw, nonce string) (Identity, error) {
	return p.observe(p.verify(ctx, raw, nonce, true))
}

// observe counts a verification by its result.
func (p *Provider) observe(id Identity, err error) (Identity, error) {
	result := "ok"
	switch {
	case err == nil:
	case errors.Is(err, ErrProviderUnavailable):
		result = "unavailable"
	case errors.Is(err, ErrClaimRequired):
		result = "claim_required"
	default:
		result = "invalid"
	}
	p.m.verifications.WithLabelValues(p.cfg.Name, result).Inc()
	return id, err
}

func (p *Provider) verify(ctx context.Context, raw, nonce string, idToken bool) (Identity, error) {
	if raw == "" || len(raw) > maxTokenBytes {
		return Identity{}, fmt.Errorf("%w: empty or over %d bytes", ErrBadToken, maxTokenBytes)
	}
	d, err := p.discover(ctx)
	if err != nil {
		return Identity{}, err
	}
	verifier := d.verifier
	if idToken {
		verifier = d.idVerifier
	}
	var slot error
	tok, err := verifier.Verify(context.WithValue(ctx, errSlotKey{}, &slot), raw)
	if err != nil {
		return Identity{}, classify(err, slot)
	}
	// The claims that describe the user are read whatever their type
	// (profileClaim): providers differ there (Cognito's email_verified is
	// the string "true" or "false"), and a claim of an unusable type is
	// no reason to refuse a validly signed token.
	var c struct {
		NotBefore         *json.Number `json:"nbf"`
		Name              profileClaim `json:"name"`
		PreferredUsername profileClaim `json:"preferred_username"`
		Email             profileClaim `json:"email"`
		EmailVerified     profileClaim `json:"email_verified"`
		Picture           profileClaim `json:"picture"`
		Nonce             profileClaim `json:"nonce"`
	}
	if err := tok.Claims(&c); err != nil {
		return Identity{}, fmt.Errorf("%w: claims: %v", ErrBadToken, err)
	}
	now := p.now()
	// Expired skew ago at most (a token without exp is expired).
	if tok.Expiry.Before(now.Add(-p.cfg.Skew)) {
		return Identity{}, fmt.Errorf("%w: at %v", ErrExpired, tok.Expiry.UTC())
	}
	if c.NotBefore != nil {
		nbf, err := c.NotBefore.Float64()
		if err != nil {
			return Identity{}, fmt.Errorf("%w: nbf: %v", ErrBadToken, err)
		}
		if time.Unix(int64(nbf), 0).After(now.Add(p.cfg.Skew)) {
			return Identity{}, fmt.Errorf("%w: nbf %v", ErrNotYetValid, time.Unix(int64(nbf), 0).UTC())
		}
	}
	if !tok.IssuedAt.IsZero() && tok.IssuedAt.After(now.Add(p.cfg.Skew)) {
		return Identity{}, fmt.Errorf("%w: iat %v", ErrNotYetValid, tok.IssuedAt.UTC())
	}
	if tok.Subject == "" || len(tok.Subject) > 255 {
		return Identity{}, ErrNoSubject
	}
	if nonce != "" && c.Nonce.String() != nonce {
		return Identity{}, ErrBadNonce
	}
	if p.cfg.RequiredClaim != "" {
		var all map[string]any
		if err := tok.Claims(&all); err != nil {
			return Identity{}, fmt.Errorf("%w: claims: %v", ErrBadToken, err)
		}
		if !claimHas(all[p.cfg.RequiredClaim], p.cfg.RequiredValue) {
			return Identity{}, fmt.Errorf("%w: %s must hold %q", ErrClaimRequired, p.cfg.RequiredClaim, p.cfg.RequiredValue)
		}
	}
	id := Identity{Provider: p.cfg.Name, Issuer: tok.Issuer, Subject: tok.Subject, DisplayName: c.Name.String(),
		Picture: c.Picture.String(), Nonce: c.Nonce.String(), IssuedAt: tok.IssuedAt}
	if c.EmailVerified == nil || c.EmailVerified.True() {
		id.Email = c.Email.String()
	}
	switch p.cfg.UsernameClaim {
	case ClaimEmail:
		id.Username, _, _ = strings.Cut(id.Email, "@")
	case ClaimSub:
		id.Username = tok.Subject
	default:
		id.Username = c.PreferredUsername.String()
	}
	return id, nil
}

// profileClaim is a claim that describes the user, as the token has it
// (nil when absent).
type profileClaim json.RawMessage

func (c *profileClaim) UnmarshalJSON(b []byte) error {
	if string(b) != "null" { // null: as absent
		*c = append(profileClaim(nil), b...)
	}
	return nil
}

// String is the claim's value when it is a string, else "" (absent,
// null, or of another type).
func (c profileClaim) String() string {
	var s string
	if json.Unmarshal(c, &s) != nil {
		return ""
	}
	return s
}

// True tells a boolean claim that is true: JSON true, or the string
// "true" (AWS Cognito writes email_verified so). Anything else, "false"
// and values of other types included, is not true.
func (c profileClaim) True() bool {
	switch string(c) {
	case "true", `"true"`:
		return true
	}
	return false
}

// claimHas: the claim equals want, or is a list holding it.
func claimHas(v any, want string) bool {
	switch x := v.(type) {
	case string:
		return x == want
	case []any:
		for _, e := range x {
			if s, ok := e.(string); ok && s == want {
				return true
			}
		}
	case bool:
		return fmt.Sprint(x) == want
	}
	return false
}

// classify maps go-oidc's errors (plain text but for expiry) to the
// sentinels; slot holds the key set's own error when the signature
// check failed.
func classify(err error, slot error) error {
	var exp *oidc.TokenExpiredError
	msg := err.Error()
	switch {
	case slot != nil:
		return slot
	case errors.As(err, &exp):
		return fmt.Errorf("%w: at %v", ErrExpired, exp.Expiry.UTC())
	case strings.Contains(msg, "issued by a different provider"):
		return fmt.Errorf("%w: %s", ErrWrongIssuer, msg)
	case strings.Contains(msg, "expected audience"):
		return fmt.Errorf("%w: %s", ErrWrongAudience, msg)
	case strings.Contains(msg, "before the nbf"):
		return fmt.Errorf("%w: %s", ErrNotYetValid, msg)
	case strings.Contains(msg, "failed to verify signature"):
		return fmt.Errorf("%w: %s", ErrBadSignature, msg)
	}
	return fmt.Errorf("%w: %s", ErrBadToken, msg)
}
