//go:build !unix

package cluster

import "errors"

// ErrDataDirLocked means another node has the Raft data dir open.
var ErrDataDirLocked = errors.New("cluster: raft data dir is in use by another node")

// lockDir is a no-op where flock is not available; raft-wal's own
// metadata lock still keeps a second process out (by waiting).
func lockDir(string) (func() error, error) { return func() error { return nil }, nil }
