package idp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"golang.org/x/sync/singleflight"
)

// allowedAlgs are the signature algorithms accepted from providers:
// asymmetric only (never "none", never HMAC, which a public key would
// turn into a forgery).
var allowedAlgs = []jose.SignatureAlgorithm{
	jose.RS256, jose.RS384, jose.RS512,
	jose.ES256, jose.ES384, jose.ES512,
	jose.PS256, jose.PS384, jose.PS512,
	jose.EdDSA,
}

func allowedAlgNames() []string {
	out := make([]string, len(allowedAlgs))
	for i, a := range allowedAlgs {
		out[i] = string(a)
	}
	return out
}

// maxJWKSBytes bounds a JWKS document.
const maxJWKSBytes = 1 << 20

// maxJWKSKeys bounds the keys kept from one document.
const maxJWKSKeys = 100

// errUnknownKey: no key of the set verifies the token (unknown kid, or a
// signature that matches none).
var errUnknownKey = errors.New("no key of the provider's JWKS verifies the token")

// jwksFetchTimeout bounds one fetch of a JWKS (a provider that accepts
// the connection and never answers).
const jwksFetchTimeout = 10 * time.Second

// keySet is a provider's JWKS, fetched over HTTP and cached. It
// implements go-oidc's KeySet. go-oidc's own RemoteKeySet refetches on
// every unknown kid (a flood of bogus kids would hammer the provider) and
// keeps keys until such a refetch (a removed key keeps working); this one
// refetches on an unknown kid at most once per minRefetch, and refetches
// keys older than maxAge: in the background, while they go on serving
// (stale-while-revalidate, one fetch at a time, at most once per
// minRefetch), for up to staleFor past maxAge; older ones are fetched
// again before use.
type keySet struct {
	url        string
	client     *http.Client
	now        func() time.Time
	minRefetch time.Duration
	maxAge     time.Duration
	staleFor   time.Duration
	onFetch    func(err error) // metrics; may be nil

	sf          singleflight.Group
	mu          sync.Mutex
	keys        []jose.JSONWebKey
	fetchedAt   time.Time // of keys
	lastAttempt time.Time // of the last fetch, successful or not
	failedAt    time.Time // of the last fetch that failed
	refreshing  bool      // a background refresh of stale keys runs
}

// parseJWKS reads a JWKS document, skipping keys it cannot use (other
// key types, encryption keys, malformed entries) rather than refusing
// the whole set.
func parseJWKS(b []byte) ([]jose.JSONWebKey, error) {
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("oidc: JWKS: %w", err)
	}
	var keys []jose.JSONWebKey
	for _, raw := range doc.Keys {
		var k jose.JSONWebKey
		if err := k.UnmarshalJSON(raw); err != nil {
			continue
		}
		if !k.Valid() || !k.IsPublic() || (k.Use != "" && k.Use != "sig") {
			continue
		}
		if k.Algorithm != "" && !algAllowed(k.Algorithm) {
			continue
		}
		keys = append(keys, k)
		if len(keys) == maxJWKSKeys {
			break
		}
	}
	return keys, nil
}

func algAllowed(alg string) bool {
	for _, a := range allowedAlgs {
		if string(a) == alg {
			return true
		}
	}
	return false
}

// fetch gets the JWKS now (one request at a time; concurrent callers
// share it).
func (k *keySet) fetch(ctx context.Context) ([]jose.JSONWebKey, error) {
	ch := k.sf.DoChan("jwks", func() (any, error) {
		k.mu.Lock()
		k.lastAttempt = k.now()
		k.mu.Unlock()
		keys, err := k.get(ctx)
		if k.onFetch != nil {
			k.onFetch(err)
		}
		if err != nil {
			k.mu.Lock()
			k.failedAt = k.now()
			k.mu.Unlock()
			return nil, err
		}
		k.mu.Lock()
		k.keys, k.fetchedAt = keys, k.now()
		k.mu.Unlock()
		return keys, nil
	})
	select {
	case <-ctx.Done():
		return nil, fmt.Errorf("oidc: JWKS fetch still running: %w", ctx.Err())
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		return r.Val.([]jose.JSONWebKey), nil
	}
}

func (k *keySet) get(ctx context.Context) ([]jose.JSONWebKey, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), jwksFetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, k.url, nil)
	if err != nil {
		return nil, fmt.Errorf("oidc: JWKS request: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := k.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("oidc: fetching JWKS: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	if err != nil {
		return nil, fmt.Errorf("oidc: reading JWKS: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("oidc: JWKS %s: %s", k.url, resp.Status)
	}
	if len(body) > maxJWKSBytes {
		return nil, fmt.Errorf("oidc: JWKS over %d bytes", maxJWKSBytes)
	}
	return parseJWKS(body)
}

// current returns the keys to verify with: cached ones while fresh;
// stale ones (past maxAge, within staleFor) at once, while one
// background fetch replaces them (a slow or hanging provider holds no
// sign-in); otherwise (none yet, or too old) a new fetch.
func (k *keySet) current(ctx context.Context) ([]jose.JSONWebKey, error) {
	now := k.now()
	k.mu.Lock()
	keys, at, last, failed := k.keys, k.fetchedAt, k.lastAttempt, k.failedAt
	if !at.IsZero() && now.Sub(at) < k.maxAge {
		k.mu.Unlock()
		return keys, nil
	}
	if !at.IsZero() && now.Sub(at) < k.maxAge+k.staleFor {
		// Not on every token while a refetch fails: once per minRefetch.
		if !k.refreshing && now.Sub(last) >= k.minRefetch {
			k.refreshing = true
			go k.refresh()
		}
		k.mu.Unlock()
		return keys, nil
	}
	k.mu.Unlock()
	if !at.IsZero() && now.Sub(last) < k.minRefetch {
		// a refetch failed a moment ago: do not retry on every token
		return nil, fmt.Errorf("%w: keys expired and the provider unreachable", ErrProviderUnavailable)
	}
	if at.IsZero() && !failed.IsZero() && now.Sub(failed) < k.minRefetch {
		// Never fetched, and the last try failed a moment ago: not again
		// on every token (a fetch under way is joined, below).
		return nil, fmt.Errorf("%w: the provider's keys could not be fetched yet", ErrProviderUnavailable)
	}
	fresh, err := k.fetch(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrProviderUnavailable, err)
	}
	return fresh, nil
}

// refresh fetches stale keys again in the background (bounded by
// jwksFetchTimeout); a failure keeps the stale ones.
func (k *keySet) refresh() {
	defer func() {
		k.mu.Lock()
		k.refreshing = false
		k.mu.Unlock()
	}()
	_, _ = k.fetch(context.Background())
}

// VerifySignature implements oidc.KeySet: the token's payload once a key
// of the set verifies its signature.
func (k *keySet) VerifySignature(ctx context.Context, raw string) ([]byte, error) {
	payload, err := k.verifySignature(ctx, raw)
	if slot, ok := ctx.Value(errSlotKey{}).(*error); ok && err != nil {
		*slot = err // go-oidc passes on only the text of the error
	}
	return payload, err
}

func (k *keySet) verifySignature(ctx context.Context, raw string) ([]byte, error) {
	jws, err := jose.ParseSigned(raw, allowedAlgs)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadToken, err)
	}
	if len(jws.Signatures) != 1 {
		return nil, fmt.Errorf("%w: want one signature", ErrBadToken)
	}
	hdr := jws.Signatures[0].Header
	keys, err := k.current(ctx)
	if err != nil {
		return nil, err
	}
	if payload, ok := verifyWith(jws, hdr, keys); ok {
		return payload, nil
	}
	// Unknown kid (or no key matched): the provider may have rotated its
	// keys. Keys a background refresh brought since current answered are
	// tried; then the JWKS is fetched, at most once per minRefetch, except
	// that a background refresh running now (current may have started it
	// for this very token) is joined rather than refused: the key may be
	// among those it brings.
	k.mu.Lock()
	wait := k.lastAttempt.Add(k.minRefetch).Sub(k.now())
	refreshing, cached := k.refreshing, k.keys
	k.mu.Unlock()
	if len(cached) > 0 && (len(keys) == 0 || &cached[0] != &keys[0]) {
		if payload, ok := verifyWith(jws, hdr, cached); ok {
			return payload, nil
		}
	}
	if wait > 0 && !refreshing {
		return nil, fmt.Errorf("%w: %w (kid %q; JWKS refetched less than %v ago)", ErrBadSignature, errUnknownKey, hdr.KeyID, k.minRefetch)
	}
	keys, err = k.fetch(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrProviderUnavailable, err)
	}
	if payload, ok := verifyWith(jws, hdr, keys); ok {
		return payload, nil
	}
	return nil, fmt.Errorf("%w: %w (kid %q)", ErrBadSignature, errUnknownKey, hdr.KeyID)
}

// verifyWith tries the keys whose kid (and alg, when the key names one)
// match the token's header.
func verifyWith(jws *jose.JSONWebSignature, hdr jose.Header, keys []jose.JSONWebKey) ([]byte, bool) {
	for i := range keys {
		key := &keys[i]
		if hdr.KeyID != "" && key.KeyID != hdr.KeyID {
			continue
		}
		if key.Algorithm != "" && key.Algorithm != hdr.Algorithm {
			continue
		}
		if payload, err := jws.Verify(key); err == nil {
			return payload, true
		}
	}
	return nil, false
}
