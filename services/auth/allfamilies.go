package auth

import (
	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/cluster/fsm"
)

// The index of every refresh-token family by user, revoked ones too
// (the session index, r/auth/rtuser/, holds the live ones only), for
// erasing an account: its last step read and decoded every user's
// families to find the user's, inside the FSM apply on every node.
//
// r/auth/rtall/{uid}/{family} is written with the family (and at every
// rotation, as the session index is) and deleted with it (prune,
// erase). Families made before it are indexed by the prune walk
// (prune.go), which marks it complete (keyAllFamiliesIndexed) on a node
// that applied the walk's first step with this code: its own walk mark
// (keyAllIndexWalk), as a node of the version before this one recorded
// the walk's start for the session index without indexing every family
// here. Until the mark an erasure reads every family, as before, and
// deletes the same ones.
const (
	prefixAllFamilies     = "r/auth/rtall/"
	keyAllIndexWalk       = "r/auth/rtallwalk"    // JSON time: the walk this node indexed from its first step
	keyAllFamiliesIndexed = "r/auth/rtallindexed" // JSON time: the walk that completed the index here
)

func indexAllFamily(tx *badger.Txn, uid, family string) error {
	return tx.Set([]byte(prefixAllFamilies+uid+"/"+family), nil)
}

func unindexAllFamily(tx *badger.Txn, uid, family string) error {
	return tx.Delete([]byte(prefixAllFamilies + uid + "/" + family))
}

// allFamiliesIndex marks the walk and the completion of the index of
// every family by user (r/auth/rtall/).
var allFamiliesIndex = fsm.IndexMarks{Walk: []byte(keyAllIndexWalk), Done: []byte(keyAllFamiliesIndexed)}
