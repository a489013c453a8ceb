// Package idptest is an OpenID Connect identity provider for tests: a
// real HTTPS server on 127.0.0.1 with its own self-signed certificate
// (CAFile trusts it), serving discovery and a JWKS, and minting tokens
// signed with its current key. Keys rotate on demand; the JWKS can be
// made to fail; fetches of the JWKS are counted.
package idptest

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// ClientID is the audience tokens carry by default.
const ClientID = "edgechat-test"

type key struct {
	kid  string
	priv *rsa.PrivateKey
}

// Provider is a running test identity provider.
type Provider struct {
	Issuer string // https://127.0.0.1:PORT
	CAFile string // PEM of the server's certificate

	srv       *httptest.Server
	mu        sync.Mutex
	keys      []key                   // published; the last one signs
	down      bool                    // discovery and JWKS answer 503
	next      Claims                  // who signs in at /authorize next
	codes     map[string]grant        // issued authorization codes
	devices   map[string]*deviceGrant // device codes (RFC 8628)
	badNonce  bool                    // ID tokens of the code flow carry a wrong nonce
	denied    bool                    // the authorization endpoint answers access_denied (SetDenied)
	jwksDown  bool                    // the JWKS endpoint answers 503 (SetJWKSDown)
	codeLen   int                     // authorization codes padded to this length (0: short)
	secret    string                  // required client secret ("" : a public client)
	hang      chan struct{}           // non-nil: the JWKS answers once it is closed
	jwksHits  atomic.Int64
	discHits  atomic.Int64
	keyNumber int
}

// Start starts a provider; it stops when the test ends.
func Start(t testing.TB) *Provider {
	t.Helper()
	p := &Provider{codes: map[string]grant{}, devices: map[string]*deviceGrant{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", p.discovery)
	mux.HandleFunc("GET /jwks", p.jwks)
	mux.HandleFunc("GET /authorize", p.authorize)
	mux.HandleFunc("POST /token", p.token)
	mux.HandleFunc("POST /device", p.device)
	p.srv = httptest.NewTLSServer(mux)
	t.Cleanup(p.srv.Close)
	p.Issuer = p.srv.URL
	p.CAFile = filepath.Join(t.TempDir(), "idp-ca.pem")
	cert := p.srv.Certificate()
	if err := os.WriteFile(p.CAFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	p.Rotate()
	return p
}

// Client is an HTTP client that trusts the provider.
func (p *Provider) Client() *http.Client { return p.srv.Client() }

// Mux-free handlers.

func (p *Provider) discovery(w http.ResponseWriter, _ *http.Request) {
	p.discHits.Add(1)
	if p.isDown() {
		http.Error(w, "down", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"issuer":                                p.Issuer,
		"authorization_endpoint":                p.Issuer + "/authorize",
		"token_endpoint":                        p.Issuer + "/token",
		"device_authorization_endpoint":         p.Issuer + "/device",
		"jwks_uri":                              p.Issuer + "/jwks",
		"response_types_supported":              []string{"code"},
		"subject_types_supported":               []string{"public"},
		"id_token_signing_alg_values_supported": []string{"RS256"},
		"code_challenge_methods_supported":      []string{"S256"},
	})
}

func (p *Provider) jwks(w http.ResponseWriter, r *http.Request) {
	p.jwksHits.Add(1)
	p.mu.Lock()
	hang := p.hang
	p.mu.Unlock()
	if hang != nil {
		select {
		case <-hang:
		case <-r.Context().Done():
			return
		}
	}
	p.mu.Lock()
	jwksDown := p.jwksDown
	p.mu.Unlock()
	if p.isDown() || jwksDown {
		http.Error(w, "down", http.StatusServiceUnavailable)
		return
	}
	p.mu.Lock()
	var set jose.JSONWebKeySet
	for _, k := range p.keys {
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: &k.priv.PublicKey, KeyID: k.kid, Algorithm: "RS256", Use: "sig"})
	}
	p.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(set)
}

func (p *Provider) isDown() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.down
}

// SetJWKSDown makes the JWKS alone fail (503), discovery still working,
// or work again.
func (p *Provider) SetJWKSDown(down bool) {
	p.mu.Lock()
	p.jwksDown = down
	p.mu.Unlock()
}

// SetDown makes discovery and the JWKS fail (503) or work again.
func (p *Provider) SetDown(down bool) {
	p.mu.Lock()
	p.down = down
	p.mu.Unlock()
}

// HangJWKS makes the JWKS endpoint accept requests and answer none
// (until the client gives up) until release is called; release is also
// called when the test ends.
func (p *Provider) HangJWKS(t testing.TB) (release func()) {
	ch := make(chan struct{})
	p.mu.Lock()
	p.hang = ch
	p.mu.Unlock()
	var once sync.Once
	release = func() {
		once.Do(func() {
			p.mu.Lock()
			if p.hang == ch {
				p.hang = nil
			}
			p.mu.Unlock()
			close(ch)
		})
	}
	t.Cleanup(release)
	return release
}

// JWKSHits and DiscoveryHits count requests to those endpoints.
func (p *Provider) JWKSHits() int64      { return p.jwksHits.Load() }
func (p *Provider) DiscoveryHits() int64 { return p.discHits.Load() }

// Rotate adds a new signing key (published next to the old ones) and
// returns its kid.
func (p *Provider) Rotate() string {
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.keyNumber++
	k := key{kid: fmt.Sprintf("key-%d", p.keyNumber), priv: priv}
	p.keys = append(p.keys, k)
	return k.kid
}

// DropOldKeys unpublishes every key but the current one.
func (p *Provider) DropOldKeys() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.keys = p.keys[len(p.keys)-1:]
}

// Claims are a token's claims; Token fills iss, aud, iat and exp when
// they are absent.
type Claims map[string]any

// Token mints a token signed with the current key (RS256).
func (p *Provider) Token(c Claims) string {
	p.mu.Lock()
	k := p.keys[len(p.keys)-1]
	p.mu.Unlock()
	return p.sign(k, jose.RS256, c)
}

// TokenWithKID mints a token with the current key but a header naming kid.
func (p *Provider) TokenWithKID(kid string, c Claims) string {
	p.mu.Lock()
	k := p.keys[len(p.keys)-1]
	p.mu.Unlock()
	k.kid = kid
	return p.sign(k, jose.RS256, c)
}

// DefaultClaims completes c with iss, aud, iat and exp (one hour).
func (p *Provider) DefaultClaims(c Claims) Claims {
	out := Claims{"iss": p.Issuer, "aud": ClientID, "iat": time.Now().Unix(), "exp": time.Now().Add(time.Hour).Unix()}
	for k, v := range c {
		if v == nil {
			delete(out, k) // a nil value removes a default
			continue
		}
		out[k] = v
	}
	return out
}

func (p *Provider) sign(k key, alg jose.SignatureAlgorithm, c Claims) string {
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: k.priv},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", k.kid))
	if err != nil {
		panic(err)
	}
	payload, err := json.Marshal(p.DefaultClaims(c))
	if err != nil {
		panic(err)
	}
	obj, err := signer.Sign(payload)
	if err != nil {
		panic(err)
	}
	s, err := obj.CompactSerialize()
	if err != nil {
		panic(err)
	}
	return s
}

// UnsignedToken is a token with "alg": "none" and no signature.
func (p *Provider) UnsignedToken(c Claims) string {
	b := base64.RawURLEncoding
	hdr, _ := json.Marshal(map[string]string{"alg": "none", "typ": "JWT"})
	payload, _ := json.Marshal(p.DefaultClaims(c))
	return b.EncodeToString(hdr) + "." + b.EncodeToString(payload) + "."
}

// HMACWithPublicKey is the classic key-confusion forgery: HS256 keyed
// with the current public key's PKIX bytes.
func (p *Provider) HMACWithPublicKey(c Claims) string {
	p.mu.Lock()
	k := p.keys[len(p.keys)-1]
	p.mu.Unlock()
	pub, _ := json.Marshal(jose.JSONWebKey{Key: &k.priv.PublicKey})
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: pub},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", k.kid))
	if err != nil {
		panic(err)
	}
	payload, _ := json.Marshal(p.DefaultClaims(c))
	obj, err := signer.Sign(payload)
	if err != nil {
		panic(err)
	}
	s, _ := obj.CompactSerialize()
	return s
}

type grant struct {
	claims    Claims
	nonce     string
	challenge string
	redirect  string
}

// NextLogin sets who signs in at the authorization endpoint next (consent
// is skipped): the claims of the ID token issued for the code.
func (p *Provider) NextLogin(c Claims) {
	p.mu.Lock()
	p.next = c
	p.mu.Unlock()
}

// SetBadNonce makes the code flow's ID tokens carry a nonce other than
// the one asked for.
func (p *Provider) SetBadNonce(bad bool) {
	p.mu.Lock()
	p.badNonce = bad
	p.mu.Unlock()
}

// SetDenied makes the authorization endpoint send the browser back with
// error=access_denied, as a provider does when its user cancels the
// sign-in (or refuses consent).
func (p *Provider) SetDenied(denied bool) {
	p.mu.Lock()
	p.denied = denied
	p.mu.Unlock()
}

// SetCodeLength makes the authorization endpoint issue codes of n
// characters, and add a session_state to its redirect, as Microsoft Entra
// ID does (its codes run to 2,000 characters and more; Azure AD B2C's
// past 2,400).
func (p *Provider) SetCodeLength(n int) {
	p.mu.Lock()
	p.codeLen = n
	p.mu.Unlock()
}

// RequireSecret makes the token endpoint require this client secret.
func (p *Provider) RequireSecret(secret string) {
	p.mu.Lock()
	p.secret = secret
	p.mu.Unlock()
}

func (p *Provider) authorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if q.Get("client_id") != ClientID || q.Get("response_type") != "code" || q.Get("redirect_uri") == "" {
		http.Error(w, "bad authorization request", http.StatusBadRequest)
		return
	}
	if q.Get("code_challenge_method") != "S256" || q.Get("code_challenge") == "" {
		http.Error(w, "PKCE S256 required", http.StatusBadRequest)
		return
	}
	p.mu.Lock()
	next, denied := p.next, p.denied
	p.mu.Unlock()
	if denied {
		http.Redirect(w, r, q.Get("redirect_uri")+"?error=access_denied&error_description=The+user+cancelled+the+sign-in&state="+
			url.QueryEscape(q.Get("state")), http.StatusFound)
		return
	}
	if next == nil {
		http.Error(w, "nobody signs in (NextLogin)", http.StatusForbidden)
		return
	}
	code, extra := randomString(), ""
	p.mu.Lock()
	for p.codeLen > 0 && len(code) < p.codeLen {
		code += randomString()
	}
	if p.codeLen > 0 {
		code, extra = code[:p.codeLen], "&session_state="+randomString()
	}
	p.codes[code] = grant{claims: next, nonce: q.Get("nonce"), challenge: q.Get("code_challenge"), redirect: q.Get("redirect_uri")}
	p.mu.Unlock()
	u := q.Get("redirect_uri") + "?code=" + code + "&state=" + q.Get("state") + extra
	http.Redirect(w, r, u, http.StatusFound)
}

func (p *Provider) token(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	fail := func(code string) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": code})
	}
	if r.PostForm.Get("grant_type") == "urn:ietf:params:oauth:grant-type:device_code" {
		p.deviceToken(w, r, fail)
		return
	}
	p.mu.Lock()
	g, ok := p.codes[r.PostForm.Get("code")]
	delete(p.codes, r.PostForm.Get("code")) // single use
	secret, badNonce := p.secret, p.badNonce
	p.mu.Unlock()
	id, pw, basic := r.BasicAuth()
	if !basic {
		id, pw = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	switch {
	case !ok || r.PostForm.Get("grant_type") != "authorization_code":
		fail("invalid_grant")
		return
	case id != ClientID || (secret != "" && pw != secret):
		fail("invalid_client")
		return
	case r.PostForm.Get("redirect_uri") != g.redirect:
		fail("invalid_grant")
		return
	}
	sum := sha256.Sum256([]byte(r.PostForm.Get("code_verifier")))
	if base64.RawURLEncoding.EncodeToString(sum[:]) != g.challenge {
		fail("invalid_grant") // PKCE
		return
	}
	claims := Claims{}
	for k, v := range g.claims {
		claims[k] = v
	}
	claims["nonce"] = g.nonce
	if badNonce {
		claims["nonce"] = "not-" + g.nonce
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"access_token": randomString(), "token_type": "Bearer",
		"expires_in": 3600, "id_token": p.Token(claims)})
}

func randomString() string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

type deviceGrant struct {
	userCode string
	claims   Claims // set once approved
}

// device is the device authorization endpoint (RFC 8628 3.1).
func (p *Provider) device(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil || r.PostForm.Get("client_id") != ClientID {
		http.Error(w, "bad device authorization request", http.StatusBadRequest)
		return
	}
	dc := randomString()
	p.mu.Lock()
	uc := fmt.Sprintf("ABCD-%04d", len(p.devices)+1)
	p.devices[dc] = &deviceGrant{userCode: uc}
	p.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"device_code": dc, "user_code": uc,
		"verification_uri": p.Issuer + "/activate", "verification_uri_complete": p.Issuer + "/activate?user_code=" + uc,
		"expires_in": 600, "interval": 1})
}

// ApproveDevice lets the device that showed userCode sign in as the
// user of c (what the user does in the browser); false if no such code.
func (p *Provider) ApproveDevice(userCode string, c Claims) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, g := range p.devices {
		if g.userCode == userCode {
			g.claims = c
			return true
		}
	}
	return false
}

func (p *Provider) deviceToken(w http.ResponseWriter, r *http.Request, fail func(string)) {
	dc := r.PostForm.Get("device_code")
	p.mu.Lock()
	g, ok := p.devices[dc]
	var claims Claims
	if ok && g.claims != nil {
		claims = g.claims
		delete(p.devices, dc)
	}
	p.mu.Unlock()
	switch {
	case !ok:
		fail("expired_token")
		return
	case claims == nil:
		fail("authorization_pending")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"access_token": randomString(), "token_type": "Bearer",
		"expires_in": 3600, "id_token": p.Token(claims)})
}
