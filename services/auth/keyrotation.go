package auth

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/internal/httpapi"
	"github.com/edgechat/edgechat/internal/wire"
)

// Rotating and revoking token-signing keys. Each node signs with its own
// key; every node verifies every node's (clusterkeys.go). A key that
// leaked (a stolen disk or backup of keys/, a node decommissioned) would
// otherwise mint valid tokens of any user, admins included, for ever.
//
// A revocation (CmdSigningKeyRevoke) names a kid and the time from which
// it no longer verifies, on every node, whatever the token says:
// revoking is "from now" (the user sessions made with the key are
// closed, and the node that signs with it makes a new key at once, see
// afterRevoke), a rotation retires the old key at "now + the access
// token lifetime", so that the tokens already issued live out their
// time. Clients whose access token is refused refresh it (refresh tokens
// are not signed, so they are not affected) and reconnect.
const prefixKeyRevoked = "r/auth/keyrevoked/" // + kid → keyRevocation

// keyRevocation is the stored record of a revoked or retired key.
type keyRevocation struct {
	Until  time.Time `json:"until"` // tokens signed with the key verify before this time only
	At     time.Time `json:"at"`    // when it was decided
	Reason string    `json:"reason,omitempty"`
}

// keyRevokeCmd revokes kid from Until on (Until == At: at once).
type keyRevokeCmd struct {
	Kid    string    `json:"kid"`
	Until  time.Time `json:"until"`
	At     time.Time `json:"at"`
	Reason string    `json:"reason,omitempty"` // "revoked" or "rotated"
}

// Reasons of a keyRevocation.
const (
	reasonRevoked = "revoked"
	reasonRotated = "rotated"
)

// ErrUnknownKey refuses revoking a kid no node published or holds.
var ErrUnknownKey = errors.New("auth: no such signing key")

// revokedKeys is every node's copy of r/auth/keyrevoked/: consulted on
// every token check, so a map lookup.
type revokedKeys struct {
	mu sync.RWMutex
	m  map[string]keyRevocation
}

func newRevokedKeys() *revokedKeys { return &revokedKeys{m: map[string]keyRevocation{}} }

func (r *revokedKeys) get(kid string) (keyRevocation, bool) {
	r.mu.RLock()
	v, ok := r.m[kid]
	r.mu.RUnlock()
	return v, ok
}

// refuses tells whether a token signed with kid is refused at now. A
// key revoked at once is refused from the commit on, whatever this
// node's clock says (it may run behind the proposer's); a rotation's
// retirement waits for Until.
func (r *revokedKeys) refuses(kid string, now time.Time) bool {
	v, ok := r.get(kid)
	return ok && (v.atOnce() || !now.Before(v.Until))
}

// atOnce tells whether the key was revoked at once (not retired later).
func (v keyRevocation) atOnce() bool { return !v.Until.After(v.At) }

func (r *revokedKeys) put(kid string, v keyRevocation) {
	r.mu.Lock()
	if was, ok := r.m[kid]; !ok || v.Until.Before(was.Until) {
		r.m[kid] = v
	}
	r.mu.Unlock()
}

// load replaces the set with what the database holds (at start and
// after a snapshot restore).
func (r *revokedKeys) load(db *badger.DB) error {
	m, err := loadPrefix[keyRevocation](db, prefixKeyRevoked)
	if err != nil {
		return fmt.Errorf("auth: loading revoked signing keys: %w", err)
	}
	r.mu.Lock()
	r.m = m
	r.mu.Unlock()
	return nil
}

// keys is the node's current key set (replaced whole by a rotation).
func (s *Service) keys() *keySet { return s.keyset.Load() }

// applySigningKeyRevoke records a revocation; an earlier Until wins (a
// revocation overrides a rotation's later retirement).
func (s *Service) applySigningKeyRevoke(tx *badger.Txn, _ fsm.Position, payload []byte) (any, error) {
	var c keyRevokeCmd
	if err := decodeCmd(payload, &c); err != nil {
		return nil, err
	}
	if c.Kid == "" || len(c.Kid) > 64 || c.Until.Before(c.At) {
		return nil, fmt.Errorf("%w: bad key revocation", errBadCommand)
	}
	v := keyRevocation{Until: c.Until, At: c.At, Reason: c.Reason}
	var was keyRevocation
	found, err := getJSON(tx, prefixKeyRevoked+c.Kid, &was)
	if err != nil {
		return nil, err
	}
	if found && !v.Until.Before(was.Until) {
		// Nothing earlier to write (a rotation retired the key before
		// this revocation's time); a revocation at once still closes
		// the sessions made with the key.
		return &keyRevoked{s: s, kid: c.Kid, v: was, now: v.atOnce()}, nil
	}
	if err := setJSON(tx, prefixKeyRevoked+c.Kid, v); err != nil {
		return nil, err
	}
	return &keyRevoked{s: s, kid: c.Kid, v: v, now: v.atOnce()}, nil
}

// keyRevoked is the value of a committed revocation.
type keyRevoked struct {
	s   *Service
	kid string
	v   keyRevocation
	now bool // revoked at once (not a rotation's retirement)
}

// AfterCommit implements fsm.AfterCommitter: every node refuses the
// key's tokens from Until; a revocation at once closes the sessions made
// with it, and the node that signs with it makes a new key.
func (r *keyRevoked) AfterCommit() {
	s := r.s
	s.revoked.put(r.kid, r.v)
	if !r.now {
		return
	}
	s.eraseMu.Lock()
	fns := append([]func(string){}, s.onKeyRevoked...)
	s.eraseMu.Unlock()
	for _, fn := range fns {
		fn(r.kid)
	}
	if s.keys().signer.kid == r.kid {
		s.wakeRekey() // Run makes the new key: a rotation proposes
	}
}

// wakeRekey asks Run to check whether this node's key is revoked.
func (s *Service) wakeRekey() {
	select {
	case s.rekey <- struct{}{}:
	default:
	}
}

// OnSigningKeyRevoked registers fn to run on every node once a key is
// revoked at once (the broker closes the sessions made with its tokens).
// It runs on the FSM's goroutine: fn must not block.
func (s *Service) OnSigningKeyRevoked(fn func(kid string)) {
	s.eraseMu.Lock()
	s.onKeyRevoked = append(s.onKeyRevoked, fn)
	s.eraseMu.Unlock()
}

// KeyRotation answers RotateSigningKey.
type KeyRotation struct {
	Kid     string    `json:"kid"`     // the new signing key
	Retired string    `json:"retired"` // the key it replaces
	Until   time.Time `json:"until"`   // when the retired key stops verifying
}

// RotateSigningKey gives this node a new signing key: it is published
// to the cluster before the node signs with it, and the old key retires
// once the tokens it signed have expired (the access token lifetime and
// the verification leeway from now).
func (s *Service) RotateSigningKey(ctx context.Context) (KeyRotation, error) {
	return s.rotate(ctx, true)
}

// rotate makes a new signing key, installs it in KeyDir (the old one
// kept as retired-<kid>.key), publishes it, then signs with it; retire
// also schedules the old key's retirement.
func (s *Service) rotate(ctx context.Context, retire bool) (KeyRotation, error) {
	s.rotateMu.Lock()
	defer s.rotateMu.Unlock()
	old := s.keys()
	next, err := installNewKey(s.cfg.KeyDir)
	if err != nil {
		return KeyRotation{}, err
	}
	// Published first: a token of the new key must verify on every node.
	if _, err := s.propose(ctx, wire.CmdSigningKey, signingKeyCmd{
		Kid: next.kid, X: base64.RawURLEncoding.EncodeToString(next.pub), At: s.now().UTC(),
	}); err != nil {
		return KeyRotation{}, fmt.Errorf("auth: publish the new signing key (it signs from the next start): %w", err)
	}
	byKID := maps.Clone(old.byKID)
	byKID[next.kid] = next
	s.keyset.Store(&keySet{signer: next, byKID: byKID})
	res := KeyRotation{Kid: next.kid, Retired: old.signer.kid}
	s.log.Info("signing key rotated", "kid", next.kid, "retired", old.signer.kid)
	if !retire {
		return res, nil
	}
	now := s.now().UTC()
	res.Until = now.Add(s.cfg.AccessTTL + verifyLeeway)
	if _, err := s.propose(ctx, wire.CmdSigningKeyRevoke, keyRevokeCmd{Kid: old.signer.kid, Until: res.Until, At: now, Reason: reasonRotated}); err != nil {
		return res, fmt.Errorf("auth: the new key signs, but the old one's retirement was not recorded (revoke it): %w", err)
	}
	return res, nil
}

// installNewKey writes a new key as KeyDir's signing key, the current
// one moved to retired-<kid>.key (still loaded at start, so its tokens
// verify until its revocation says otherwise). The kid is the file's,
// not the one in memory: after a rotation whose publication failed the
// file holds a key the node never signed with.
func installNewKey(dir string) (*signingKey, error) {
	current := filepath.Join(dir, SigningKeyFile)
	was, err := parseKeyFile(current)
	if err != nil {
		return nil, err
	}
	tmp, next, err := writeNewKey(dir)
	if err != nil {
		return nil, err
	}
	defer os.Remove(tmp)
	if err := os.Rename(current, filepath.Join(dir, "retired-"+was.kid+".key")); err != nil {
		return nil, fmt.Errorf("auth: retire the signing key: %w", err)
	}
	if err := os.Rename(tmp, current); err != nil {
		return nil, fmt.Errorf("auth: install the new signing key: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync() // the renames survive a crash
		d.Close()
	}
	return next, nil
}

// RevokeSigningKey revokes kid at once, on every node: tokens signed
// with it are refused, the sessions made with them closed, and the node
// that signs with it makes a new key.
func (s *Service) RevokeSigningKey(ctx context.Context, kid string) (time.Time, error) {
	if _, local := s.keys().byKID[kid]; !local {
		if _, ok := s.replicatedKey(kid); !ok {
			return time.Time{}, fmt.Errorf("%w: %q", ErrUnknownKey, kid)
		}
	}
	now := s.now().UTC()
	if _, err := s.propose(ctx, wire.CmdSigningKeyRevoke, keyRevokeCmd{Kid: kid, Until: now, At: now, Reason: reasonRevoked}); err != nil {
		return time.Time{}, fmt.Errorf("auth: revoke signing key: %w", err)
	}
	s.log.Warn("signing key revoked", "kid", kid)
	return now, nil
}

// KeyInfo describes one signing key of the cluster (GET /admin/keys).
type KeyInfo struct {
	Kid         string         `json:"kid"`
	Current     bool           `json:"current"`               // this node signs with it
	PublishedAt *time.Time     `json:"publishedAt,omitempty"` // when a node published it to the cluster
	Revoked     *keyRevocation `json:"revoked,omitempty"`     // until when it verifies, and why
}

// SigningKeys lists the keys this node knows: its own (current and
// retired) and those the cluster's nodes published, current first, then
// by kid.
func (s *Service) SigningKeys() ([]KeyInfo, error) {
	ks := s.keys()
	infos := map[string]*KeyInfo{}
	for kid := range ks.byKID {
		infos[kid] = &KeyInfo{Kid: kid, Current: kid == ks.signer.kid}
	}
	err := s.db.View(func(tx *badger.Txn) error {
		it := tx.NewIterator(badger.IteratorOptions{Prefix: []byte(prefixKey), PrefetchValues: true})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			kid := string(it.Item().Key()[len(prefixKey):])
			var pk publishedKey
			if err := it.Item().Value(func(b []byte) error { return json.Unmarshal(b, &pk) }); err != nil {
				return err
			}
			info := infos[kid]
			if info == nil {
				info = &KeyInfo{Kid: kid}
				infos[kid] = info
			}
			at := pk.At
			info.PublishedAt = &at
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("auth: list signing keys: %w", err)
	}
	out := make([]KeyInfo, 0, len(infos))
	for kid, info := range infos {
		if v, ok := s.revoked.get(kid); ok {
			info.Revoked = &v
		}
		out = append(out, *info)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Current != out[j].Current {
			return out[i].Current
		}
		return out[i].Kid < out[j].Kid
	})
	return out, nil
}

func (s *Service) handleListKeys(w http.ResponseWriter, _ *http.Request) {
	keys, err := s.SigningKeys()
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"keys": keys})
}

func (s *Service) handleRotateKey(w http.ResponseWriter, r *http.Request) {
	res, err := s.RotateSigningKey(r.Context())
	if err != nil {
		httpapi.WriteError(w, httpError(err))
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	httpapi.WriteJSON(w, http.StatusOK, res)
}

func (s *Service) handleRevokeKey(w http.ResponseWriter, r *http.Request) {
	kid := r.PathValue("kid")
	until, err := s.RevokeSigningKey(r.Context(), kid)
	if errors.Is(err, ErrUnknownKey) {
		httpapi.WriteError(w, httpapi.Errorf(http.StatusNotFound, httpapi.CodeNotFound, "no signing key %q", kid))
		return
	}
	if err != nil {
		httpapi.WriteError(w, httpError(err))
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"kid": kid, "until": until})
}
