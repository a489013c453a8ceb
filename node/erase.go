package node

import (
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/internal/wire"
	"github.com/edgechat/edgechat/services/archive"
	"github.com/edgechat/edgechat/services/users"
)

// DefaultAccountDeleteGrace is how long a deleted account waits before
// it is erased (--account-delete-grace).
const DefaultAccountDeleteGrace = 7 * 24 * time.Hour

// wireErasure gives the auth service every service's part of erasing a
// deleted account (services/auth/delete.go): each deletes only its own
// keys, in one replicated command. Called before Raft applies anything.
func (n *Node) wireErasure() {
	// First, while the keys that name them are all there: the other
	// regions that hold something of the user are told to erase it
	// (bridge/region erasure.go), through the links' outboxes.
	n.Auth.AddEraser("links", n.stageErasure)
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

// stageErasure stages uid's erasure for the regions of its direct peers
// and of the users of other regions in its contacts and blocks, or who
// have it in theirs: one step, done at once (a user of another region,
// erased here because its region told us, is told to no one).
func (n *Node) stageErasure(tx *badger.Txn, uid string, b *fsm.Budget) (bool, func(), error) {
	if wire.ValidUserID(uid) != nil {
		return true, nil, nil
	}
	peers, err := archive.PeerRegions(tx, uid)
	if err != nil {
		return false, nil, err
	}
	rels, err := users.RelationRegions(tx, uid)
	if err != nil {
		return false, nil, err
	}
	regions := append(peers, rels...)
	b.Left -= 2 * len(regions) // an outbox entry and its next position each
	after, err := n.Region.StageErasure(tx, uid, regions)
	return err == nil, after, err
}
