package archive

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/cluster/featurelevel"
	"github.com/edgechat/edgechat/internal/wire"
)

// Owner marks (a shared segment store). A cluster deletes, as orphans,
// the objects of its store that its state does not reference
// (collectOrphans), so two clusters on one bucket (two regions, a
// staging cluster, with the default bucket name) deleted each other's
// segments. From feature level 2 the cluster has an owner ID in its
// replicated state (r/arch/owner, set once by wire.CmdArchiveOwner), and
// the leader marks every object it puts with an empty object
//
//	o/{owner}/{key}
//
// put before the object itself. The collector deletes an unreferenced
// object when this cluster marked it, or, while no other owner's mark is
// in the store, whatever its marks (objects put before the marks, by a
// cluster alone on its bucket); it leaves the others alone.

// ownerIDLen is the length of an owner ID (random bytes; hex in keys).
const ownerIDLen = 16

// markRoot is where the owners' marks live (segment keys start with d/
// or g/).
const markRoot = "o/"

func ownerKey() []byte { return cat([]byte("owner")) }

// markKey is owner's mark of the object key.
func markKey(owner, key string) string { return markRoot + owner + "/" + key }

// ownerSet is the FSM's result of a CmdArchiveOwner: the owner ID in
// force after it (hex).
type ownerSet string

// applyOwner sets the cluster's owner ID unless it has one already. It
// is refused below feature level 2: a node of an earlier version would
// skip it, and the states would part.
func applyOwner(tx *badger.Txn, payload []byte) (any, error) {
	if len(payload) != ownerIDLen {
		return nil, fmt.Errorf("%w: archive owner of %d bytes", ErrBadCommand, len(payload))
	}
	level, err := featurelevel.Read(tx)
	if err != nil {
		return nil, err
	}
	if level < featurelevel.ArchiveOwner {
		return nil, fmt.Errorf("%w: archive owner below feature level %d", ErrBadCommand, featurelevel.ArchiveOwner)
	}
	if cur, found, err := ownerIn(tx); err != nil || found {
		return ownerSet(cur), err
	}
	if err := tx.Set(ownerKey(), payload); err != nil {
		return nil, err
	}
	return ownerSet(hex.EncodeToString(payload)), nil
}

func ownerIn(tx *badger.Txn) (string, bool, error) {
	item, err := tx.Get(ownerKey())
	if errors.Is(err, badger.ErrKeyNotFound) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	v, err := item.ValueCopy(nil)
	if err != nil {
		return "", false, err
	}
	if len(v) != ownerIDLen {
		return "", false, fmt.Errorf("%w: archive owner of %d bytes", ErrBadCommand, len(v))
	}
	return hex.EncodeToString(v), true, nil
}

// ownerCache keeps the owner ID once known (it never changes).
type ownerCache struct {
	mu sync.Mutex
	id string
}

// ClusterID is the cluster's ID: its owner ID (hex), also what names
// the cluster's backups (services/backup, the manifest's cluster), set
// now if the cluster has none yet; "" below feature level 2.
func (s *Service) ClusterID(ctx context.Context) (string, error) { return s.owner(ctx) }

// KnownClusterID is the cluster's ID as this node applied it, without
// setting it: "" when the cluster has none yet.
func (s *Service) KnownClusterID() (string, error) {
	c := &s.ownerc
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.id != "" {
		return c.id, nil
	}
	id, _, err := s.ownerApplied()
	if err == nil {
		c.id = id
	}
	return id, err
}

func (s *Service) ownerApplied() (id string, found bool, err error) {
	err = s.db.View(func(tx *badger.Txn) (err error) {
		id, found, err = ownerIn(tx)
		return err
	})
	return id, found, err
}

// owner is the cluster's owner ID, which the leader sets the first time
// it needs it at feature level 2; "" below it (nothing is marked, and
// objects are collected as before).
func (s *Service) owner(ctx context.Context) (string, error) {
	c := &s.ownerc
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.id != "" {
		return c.id, nil
	}
	id, found, err := s.ownerApplied()
	if err != nil {
		return "", err
	}
	if !found {
		if featurelevel.Of(s.db) < featurelevel.ArchiveOwner {
			return "", nil
		}
		b := make([]byte, ownerIDLen)
		rand.Read(b)
		v, err := s.prop.Propose(ctx, wire.CmdArchiveOwner, b)
		if err != nil {
			return "", fmt.Errorf("archive: set the owner ID: %w", err)
		}
		set, ok := v.(ownerSet)
		if !ok { // a forwarded proposal's value does not survive the trip: read what this node applied
			if id, found, err = s.ownerApplied(); err != nil || !found {
				return "", fmt.Errorf("archive: set the owner ID: not applied here yet (%v)", err)
			}
			set = ownerSet(id)
		}
		id = string(set)
	}
	c.id = id
	return id, nil
}

// putOwned puts an object into the shared store, marked as this
// cluster's first.
func (s *Service) putOwned(ctx context.Context, key string, data []byte) error {
	owner, err := s.owner(ctx)
	if err != nil {
		return err
	}
	if owner != "" {
		if err := s.tier.store.Put(ctx, markKey(owner, key), nil); err != nil {
			return fmt.Errorf("archive: mark %s: %w", key, err)
		}
	}
	return s.tier.store.Put(ctx, key, data)
}

// storeMarks lists the owners' marks of a shared store: the keys this
// cluster marked (with the marks' times) and another owner, if any.
func (s *Service) storeMarks(ctx context.Context, owner string) (ours map[string]time.Time, other string, err error) {
	ours = map[string]time.Time{}
	err = s.tier.store.List(ctx, markRoot, func(key string, _ int64, modified time.Time) bool {
		o, obj, ok := strings.Cut(strings.TrimPrefix(key, markRoot), "/")
		switch {
		case !ok:
		case o == owner:
			ours[obj] = modified
		case other == "":
			other = o
		}
		return true
	})
	return ours, other, err
}
