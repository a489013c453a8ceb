package archive

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Every node of a cluster must keep sealed segments in the same store:
// with a local store each node writes the copy a seal carries, with S3
// the leader uploads and the others read the bucket. A member whose
// store differs reads the segments sealed meanwhile from where they are
// not (an S3 node ignores the copy; a node on another bucket finds
// nothing), and its history over them fails for good. A joiner whose
// store differs from the leader's is refused (cluster, JoinArgs); the
// leader also asks the members before it seals or rewrites a segment
// (Deps.StoreCheck), since a member restarted with another configuration
// and no join is not asked otherwise, and seals nothing while one
// differs: messages stay hot, logged and counted
// (edgechat_archive_store_mismatch).

// ErrStoreMismatch is wrapped by a sweep that sealed nothing because a
// member keeps segments in another store than this node.
var ErrStoreMismatch = errors.New("archive: sealing stopped: the members do not keep sealed segments in the same store")

// storeCheckEvery is how long a check's answer is reused by retention's
// rewrites (a sweep may rewrite many segments); a seal sweep asks anew.
const storeCheckEvery = 10 * time.Second

type storeCheck struct {
	check func(ctx context.Context) (int, error)

	mu  sync.Mutex
	at  time.Time
	err error
}

// checkStores returns ErrStoreMismatch (with the members' stores) while a
// member keeps segments in another store than this node; fresh: ask now,
// else reuse an answer younger than storeCheckEvery.
func (s *Service) checkStores(ctx context.Context, fresh bool) error {
	c := &s.stores
	if c.check == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !fresh && !c.at.IsZero() && time.Since(c.at) < storeCheckEvery {
		return c.err
	}
	n, err := c.check(ctx)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	s.metrics.storeMismatch.Set(float64(n))
	c.at, c.err = time.Now(), nil
	if err != nil {
		c.err = fmt.Errorf("%w: %w", ErrStoreMismatch, err)
	}
	return c.err
}
