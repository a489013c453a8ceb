package auth

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/internal/backoff"
	"github.com/edgechat/edgechat/internal/wire"
)

// Each node signs with its own key from KeyDir. So that a token from one
// node verifies on every node, each node publishes its public key through
// the log (CmdSigningKey); verification falls back to these replicated
// keys for a kid it does not hold locally.

const prefixKey = "r/auth/key/" // + kid → publishedKey

type publishedKey struct {
	X  string    `json:"x"` // base64url Ed25519 public key
	At time.Time `json:"at"`
}

type signingKeyCmd struct {
	Kid string    `json:"kid"`
	X   string    `json:"x"`
	At  time.Time `json:"at"`
}

func applySigningKey(tx *badger.Txn, _ fsm.Position, payload []byte) (any, error) {
	var c signingKeyCmd
	if err := decodeCmd(payload, &c); err != nil {
		return nil, err
	}
	pub, err := base64.RawURLEncoding.DecodeString(c.X)
	if err != nil || len(pub) != ed25519.PublicKeySize || thumbprint(pub) != c.Kid {
		return nil, fmt.Errorf("%w: bad signing key", errBadCommand)
	}
	var existing publishedKey
	found, err := getJSON(tx, prefixKey+c.Kid, &existing)
	if err != nil || found {
		return nil, err // already published: nothing to write
	}
	return nil, setJSON(tx, prefixKey+c.Kid, publishedKey{X: c.X, At: c.At})
}

// replicatedKey looks up a key another node published. Found keys are
// cached (keys are never withdrawn); misses are not, so that tokens with
// random kids cannot grow the cache.
func (s *Service) replicatedKey(kid string) (ed25519.PublicKey, bool) {
	s.pubMu.RLock()
	k, ok := s.pubCache[kid]
	s.pubMu.RUnlock()
	if ok {
		return k, true
	}
	if kid == "" || len(kid) > 64 {
		return nil, false
	}
	var pk publishedKey
	var found bool
	err := s.db.View(func(tx *badger.Txn) error {
		var err error
		found, err = getJSON(tx, prefixKey+kid, &pk)
		return err
	})
	if err != nil || !found {
		return nil, false
	}
	pub, err := base64.RawURLEncoding.DecodeString(pk.X)
	if err != nil || len(pub) != ed25519.PublicKeySize {
		return nil, false
	}
	s.pubMu.Lock()
	s.pubCache[kid] = pub
	s.pubMu.Unlock()
	return pub, true
}

// replicatedKIDs lists the kids published through the log.
func (s *Service) replicatedKIDs() []string {
	var kids []string
	_ = s.db.View(func(tx *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.PrefetchValues = false
		opts.Prefix = []byte(prefixKey)
		it := tx.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			kids = append(kids, string(it.Item().Key()[len(prefixKey):]))
		}
		return nil
	})
	sort.Strings(kids)
	return kids
}

// PublishKey replicates this node's public signing key to the cluster,
// unless it is already there. Run calls it until it succeeds.
func (s *Service) PublishKey(ctx context.Context) error {
	kid := s.keys().signer.kid
	if _, ok := s.replicatedKey(kid); ok {
		return nil
	}
	_, err := s.propose(ctx, wire.CmdSigningKey, signingKeyCmd{
		Kid: kid, X: base64.RawURLEncoding.EncodeToString(s.keys().signer.pub), At: s.now().UTC(),
	})
	if err != nil {
		return fmt.Errorf("auth: publish signing key: %w", err)
	}
	return nil
}

// Run publishes the node's signing key once the cluster can commit
// (retrying with backoff), then, until ctx ends, makes a new key
// whenever the current one is revoked.
func (s *Service) Run(ctx context.Context) error {
	bo := backoff.New(200*time.Millisecond, 30*time.Second)
	for {
		err := s.PublishKey(ctx)
		if err == nil {
			break
		}
		if !errors.Is(err, wire.ErrUnavailable) {
			s.log.Warn("publishing signing key failed; retrying", "err", err)
		}
		if bo.Sleep(ctx) != nil {
			return nil
		}
	}
	s.log.Info("signing key published to the cluster", "kid", s.keys().signer.kid)
	retry := backoff.New(time.Second, time.Minute)
	for {
		var again <-chan time.Time
		if err := s.rekeyIfRevoked(ctx); err != nil {
			s.log.Error("this node's signing key is revoked and a new one could not be made yet; the tokens it signs are refused meanwhile",
				"err", err)
			t := time.NewTimer(retry.Next())
			again = t.C
		} else {
			retry.Reset()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.rekey:
		case <-again:
		}
	}
}

// rekeyIfRevoked makes a new signing key when the current one is
// revoked: a node that was down (or restored a snapshot) when its key
// was revoked learns it from its state, not from the revocation's
// commit. So when it is retired: a node signs with a key a rotation
// retired only when its keys/ is older than that rotation (put back
// from a copy made before it), and that key's tokens are refused once
// the retirement is due.
func (s *Service) rekeyIfRevoked(ctx context.Context) error {
	kid := s.keys().signer.kid
	if _, ok := s.revoked.get(kid); !ok {
		return nil
	}
	if _, err := s.rotate(ctx, false); err != nil {
		return fmt.Errorf("replacing revoked key %s: %w", kid, err)
	}
	return nil
}
