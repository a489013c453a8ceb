package auth

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/edgechat/edgechat/internal/ratelimit"
	"github.com/edgechat/edgechat/internal/wire"
)

// SigningKeyFile is the name of the current signing key in Config.KeyDir.
// Other "*.key" files in the directory (retired keys) still verify tokens.
const SigningKeyFile = "signing.key"

// verifyLeeway tolerates small clock differences between nodes.
const verifyLeeway = 30 * time.Second

type signingKey struct {
	kid  string
	priv ed25519.PrivateKey
	pub  ed25519.PublicKey
}

type keySet struct {
	signer *signingKey
	byKID  map[string]*signingKey // immutable after load
}

// accessClaims are the claims of an access token.
type accessClaims struct {
	jwt.RegisteredClaims
	Admin bool `json:"adm"`
	// IssuedMs is iat in milliseconds: a sign-out everywhere refuses the
	// tokens issued before it, not those of a sign-in in the same second.
	IssuedMs int64 `json:"iatms,omitempty"`
	// Session is the session (sign-in) the token belongs to (sessions.go).
	Session string `json:"sid,omitempty"`
}

// thumbprint is the RFC 7638 JWK thumbprint of an Ed25519 key, used as kid
// so that the same key has the same kid on every node.
func thumbprint(pub ed25519.PublicKey) string {
	x := base64.RawURLEncoding.EncodeToString(pub)
	sum := sha256.Sum256([]byte(`{"crv":"Ed25519","kty":"OKP","x":"` + x + `"}`))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

func parseKeyFile(path string) (*signingKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("auth: read key: %w", err)
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("auth: %s: not a PEM private key", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("auth: %s: %w", path, err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("auth: %s: not an Ed25519 key", path)
	}
	pub := priv.Public().(ed25519.PublicKey)
	return &signingKey{kid: thumbprint(pub), priv: priv, pub: pub}, nil
}

// createKeyFile writes a new key atomically: a temporary file is linked to
// the final name, so two processes starting at once agree on one key.
func createKeyFile(dir string) error {
	tmp, _, err := writeNewKey(dir)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	err = os.Link(tmp, filepath.Join(dir, SigningKeyFile))
	if err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("auth: install key: %w", err)
	}
	return nil
}

// writeNewKey generates a key and writes it, synced, to a temporary
// file in dir (0600) for the caller to install and then remove.
func writeNewKey(dir string) (string, *signingKey, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", nil, fmt.Errorf("auth: generate key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return "", nil, fmt.Errorf("auth: encode key: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".signing-*.tmp")
	if err != nil {
		return "", nil, fmt.Errorf("auth: create key: %w", err)
	}
	werr := tmp.Chmod(0o600)
	if werr == nil {
		werr = pem.Encode(tmp, &pem.Block{Type: "PRIVATE KEY", Bytes: der})
	}
	if werr == nil {
		werr = tmp.Sync()
	}
	if cerr := tmp.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		os.Remove(tmp.Name())
		return "", nil, fmt.Errorf("auth: write key: %w", werr)
	}
	pub := priv.Public().(ed25519.PublicKey)
	return tmp.Name(), &signingKey{kid: thumbprint(pub), priv: priv, pub: pub}, nil
}

func loadOrCreateKeys(dir string) (*keySet, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("auth: key dir: %w", err)
	}
	signPath := filepath.Join(dir, SigningKeyFile)
	if _, err := os.Stat(signPath); errors.Is(err, os.ErrNotExist) {
		if err := createKeyFile(dir); err != nil {
			return nil, err
		}
	}
	signer, err := parseKeyFile(signPath)
	if err != nil {
		return nil, err
	}
	ks := &keySet{signer: signer, byKID: map[string]*signingKey{signer.kid: signer}}
	others, err := filepath.Glob(filepath.Join(dir, "*.key"))
	if err != nil {
		return nil, fmt.Errorf("auth: list keys: %w", err)
	}
	for _, p := range others {
		if p == signPath {
			continue
		}
		k, err := parseKeyFile(p)
		if err != nil {
			return nil, err
		}
		ks.byKID[k.kid] = k
	}
	return ks, nil
}

// Account is what an access token says of its user. Every access token
// is minted from one, by mint: login and refresh from the stored account,
// `edgechat token` from the account the node reports (GET
// /admin/users/{uid}), so that they carry the same claims.
type Account struct {
	UserID string `json:"userId"`
	Admin  bool   `json:"admin"`
}

// mint is the one function that makes access tokens: iss, sub (the user
// ID), iat, exp, a random jti and adm (the admin role) from acct, and
// sid, the session the token belongs to (none: "").
func mint(k *signingKey, issuer string, acct Account, now time.Time, ttl time.Duration, sid string) (string, error) {
	uid, admin := acct.UserID, acct.Admin
	if err := wire.ValidUserID(uid); err != nil {
		return "", fmt.Errorf("%w: %q", ErrInvalidUsername, uid)
	}
	jti := make([]byte, 16)
	if _, err := rand.Read(jti); err != nil {
		return "", fmt.Errorf("auth: token id: %w", err)
	}
	claims := accessClaims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    issuer,
			Subject:   uid,
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
			ID:        base64.RawURLEncoding.EncodeToString(jti),
		},
		Admin:    admin,
		IssuedMs: now.UnixMilli(),
		Session:  sid,
	}
	t := jwt.NewWithClaims(jwt.SigningMethodEdDSA, claims)
	t.Header["kid"] = k.kid
	s, err := t.SignedString(k.priv)
	if err != nil {
		return "", fmt.Errorf("auth: sign token: %w", err)
	}
	return s, nil
}

// MintAccessToken signs an access token for uid with the node's key (the
// claims of an Account with that role).
func (s *Service) MintAccessToken(uid string, admin bool) (string, error) {
	return mint(s.keys().signer, s.cfg.Issuer, Account{UserID: uid, Admin: admin}, s.now(), s.cfg.AccessTTL, "")
}

// MintFromKeyDir signs an access token for acct with the signing key
// stored in keyDir, without a running service (for `edgechat token NAME`,
// which asks the node for the account first, and the operator tools'
// short admin tokens). It only reads the key file; it never creates one.
func MintFromKeyDir(keyDir, issuer string, acct Account, ttl time.Duration) (string, error) {
	k, err := parseKeyFile(filepath.Join(keyDir, SigningKeyFile))
	if err != nil {
		return "", err
	}
	if issuer == "" {
		issuer = DefaultIssuer
	}
	if ttl == 0 {
		ttl = DefaultAccessTTL
	}
	// A negative ttl mints an already expired token (for tests of refusal).
	return mint(k, issuer, acct, time.Now(), ttl, "")
}

// VerifyAccessToken checks an access token: alg EdDSA only, a known kid,
// the signature, the issuer, and exp/nbf with a small leeway; then that
// its key, session, account and user's sign-outs still allow it. Errors
// wrap wire.ErrBadToken.
func (s *Service) VerifyAccessToken(token string) (wire.Principal, error) {
	now := s.now()
	sum := sha256.Sum256([]byte(token))
	v, ok := s.verified.get(sum)
	if ok {
		// A token whose signature was checked before: only its times
		// can have changed.
		if err := v.claims.checkTimes(now); err != nil {
			return wire.Principal{}, err
		}
	} else {
		var err error
		if v, err = s.parseAccessToken(token); err != nil {
			return wire.Principal{}, err
		}
		s.verified.put(sum, v)
	}
	claims, kid := &v.claims, v.kid
	if s.revoked.refuses(kid, now) {
		return wire.Principal{}, fmt.Errorf("%w: signing key revoked", wire.ErrBadToken)
	}
	if claims.Session != "" {
		// Any token of an ended session, also one minted by a refresh
		// that committed just before the end.
		if _, ok := s.ended.get(claims.Session); ok {
			return wire.Principal{}, fmt.Errorf("%w: session ended", wire.ErrBadToken)
		}
	}
	if s.gone.has(claims.Subject) {
		return wire.Principal{}, fmt.Errorf("%w: account deleted", wire.ErrBadToken)
	}
	if s.suspended.has(claims.Subject) {
		return wire.Principal{}, fmt.Errorf("%w: account suspended", wire.ErrBadToken)
	}
	if at, ok := s.signedOut.get(claims.Subject); ok && claims.issuedBefore(at) {
		return wire.Principal{}, fmt.Errorf("%w: signed out everywhere since", wire.ErrBadToken)
	}
	return wire.Principal{UserID: claims.Subject, Admin: s.adminNow(claims), KeyID: kid, SessionID: claims.Session}, nil
}

// parseAccessToken checks a token's signature and claims (the Ed25519
// verification is most of VerifyAccessToken's cost).
func (s *Service) parseAccessToken(token string) (verifiedToken, error) {
	var v verifiedToken
	_, err := jwt.ParseWithClaims(token, &v.claims, func(t *jwt.Token) (any, error) {
		v.kid, _ = t.Header["kid"].(string)
		if k, ok := s.keys().byKID[v.kid]; ok {
			return k.pub, nil
		}
		if pub, ok := s.replicatedKey(v.kid); ok {
			return pub, nil
		}
		// A key another node published a moment ago (its start, a
		// rotation) that this node has not applied yet?
		if s.catchUpForKey(v.kid) {
			if pub, ok := s.replicatedKey(v.kid); ok {
				return pub, nil
			}
		}
		return nil, fmt.Errorf("unknown kid %q", v.kid)
	},
		jwt.WithValidMethods([]string{jwt.SigningMethodEdDSA.Alg()}),
		jwt.WithIssuer(s.cfg.Issuer),
		jwt.WithLeeway(verifyLeeway),
		jwt.WithTimeFunc(s.now),
		jwt.WithExpirationRequired(),
	)
	if err != nil {
		return verifiedToken{}, fmt.Errorf("%w: %v", wire.ErrBadToken, err)
	}
	if wire.ValidUserID(v.claims.Subject) != nil {
		return verifiedToken{}, fmt.Errorf("%w: bad subject", wire.ErrBadToken)
	}
	return v, nil
}

// unknownKidCatchUps bounds how often tokens of keys this node does not
// know make it wait for what the cluster committed (a forger's random
// kids must not turn into a stream of leader round trips).
var unknownKidCatchUps = ratelimit.Spec{Rate: 5, Burst: 10}

// unknownKidWait bounds a verification's wait for the cluster.
const unknownKidWait = time.Second

// catchUpForKey waits (at most unknownKidWait, within the rate) until
// this node has applied what the cluster committed, for a token signed
// by a key it does not know: another node may have published it a
// moment ago. It reports whether it waited.
func (s *Service) catchUpForKey(kid string) bool {
	if s.barrier == nil || len(kid) != 43 { // a kid is a base64url SHA-256
		return false
	}
	if ok, _ := s.unknownKids.Allow("kid"); !ok {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), unknownKidWait)
	defer cancel()
	return s.barrier(ctx) == nil
}

// checkTimes is the time part of the claims check parseAccessToken
// makes (exp required, nbf if present, both with the leeway).
func (c *accessClaims) checkTimes(now time.Time) error {
	if c.ExpiresAt == nil || !now.Before(c.ExpiresAt.Add(verifyLeeway)) {
		return fmt.Errorf("%w: token is expired", wire.ErrBadToken)
	}
	if c.NotBefore != nil && now.Add(verifyLeeway).Before(c.NotBefore.Time) {
		return fmt.Errorf("%w: token is not valid yet", wire.ErrBadToken)
	}
	return nil
}

// verifiedToken is what a token's signature check established.
type verifiedToken struct {
	claims accessClaims
	kid    string
}

// verifiedTokens remembers the tokens whose signatures were checked, by
// the SHA-256 of the whole token (so no other token can match an entry),
// so that a client's repeated requests with one token cost a hash and
// map lookups instead of an Ed25519 verification each. Bounded: when
// full, arbitrary entries make room.
type verifiedTokens struct {
	mu  sync.Mutex
	m   map[[32]byte]verifiedToken
	max int
}

func newVerifiedTokens(max int) *verifiedTokens {
	return &verifiedTokens{m: make(map[[32]byte]verifiedToken), max: max}
}

func (c *verifiedTokens) get(k [32]byte) (verifiedToken, bool) {
	c.mu.Lock()
	v, ok := c.m[k]
	c.mu.Unlock()
	return v, ok
}

func (c *verifiedTokens) put(k [32]byte, v verifiedToken) {
	c.mu.Lock()
	if len(c.m) >= c.max {
		n := c.max / 8
		for old := range c.m {
			delete(c.m, old)
			if n--; n <= 0 {
				break
			}
		}
	}
	c.m[k] = v
	c.mu.Unlock()
}

// JWK is one public key of the JWKS document.
type JWK struct {
	Kty string `json:"kty"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Kid string `json:"kid"`
	Alg string `json:"alg"`
	Use string `json:"use"`
}

// JWKS returns the public keys that verify tokens here: this node's
// signing key first, then retired local keys and keys other nodes of the
// cluster published.
func (s *Service) JWKS() []JWK {
	out := make([]JWK, 0, len(s.keys().byKID))
	kids := make([]string, 0, len(s.keys().byKID))
	for kid := range s.keys().byKID {
		if kid != s.keys().signer.kid {
			kids = append(kids, kid)
		}
	}
	for _, kid := range s.replicatedKIDs() {
		if _, local := s.keys().byKID[kid]; !local {
			kids = append(kids, kid)
		}
	}
	sort.Strings(kids)
	kids = append([]string{s.keys().signer.kid}, kids...)
	now := s.now()
	for _, kid := range kids {
		if s.revoked.refuses(kid, now) {
			continue // no longer verifies anything
		}
		var pub ed25519.PublicKey
		if k, ok := s.keys().byKID[kid]; ok {
			pub = k.pub
		} else if p, ok := s.replicatedKey(kid); ok {
			pub = p
		} else {
			continue
		}
		out = append(out, JWK{
			Kty: "OKP", Crv: "Ed25519", Alg: "EdDSA", Use: "sig", Kid: kid,
			X: base64.RawURLEncoding.EncodeToString(pub),
		})
	}
	return out
}
