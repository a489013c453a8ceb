package node

import "time"

// DefaultAccountDeleteGrace is how long a deleted account waits before
// it is erased (--account-delete-grace).
const DefaultAccountDeleteGrace = 7 * 24 * time.Hour

// wireErasure gives the auth service every service's part of erasing a
// deleted account (services/auth/delete.go): each deletes only its own
// keys, in one replicated command. Called before Raft applies anything.
func (n *Node) wireErasure() {
	n.Auth.AddEraser("users", n.Users.EraseAccount)
	n.Auth.AddEraser("push", n.Push.EraseAccount)
	n.Auth.AddEraser("media", n.Media.EraseAccount)
	// The user's direct messages (and contact and block changes) still
	// waiting for another region: before the archive's part, so that
	// whoever sees the conversation erased sees the queue erased too.
	n.Auth.AddEraser("region", n.Region.EraseAccount)
	n.Auth.AddEraser("archive", n.Archive.EraseAccount)
	// presence's is added once presence is built (buildServices).
}
