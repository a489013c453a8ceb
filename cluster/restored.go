package cluster

import (
	"fmt"

	"github.com/hashicorp/raft"

	"github.com/edgechat/edgechat/cluster/fsm"
)

// Bootstrapping on a restored state.
//
// `edgechat restore` (services/backup) fills a new data directory's
// Badger with a backup's state, applied index X included, and leaves no
// Raft state. raft.BootstrapCluster would put the first configuration at
// log index 1, and the FSM skips every entry at or below its applied
// index as a replay: the new cluster would lose every write until its log
// passed X. So a node that bootstraps with state in its database starts
// its log after X instead: term 1, and a reference snapshot at X (the
// database holds the state, cluster/fsm/snapshot_ref.go) whose
// configuration is this node alone. Raft restores that snapshot at start
// (the FSM checks its database against it), the next entry is X+1, and a
// node that joins later gets the full state from it as from any leader.

// keyCurrentTerm is hashicorp/raft's stable-store key of the current term
// (api.go; what BootstrapCluster sets to 1).
var keyCurrentTerm = []byte("CurrentTerm")

// bootstrapAtState bootstraps a one-voter cluster whose log starts after
// applied, the FSM's applied index.
//
// The snapshot is written first and the term last: Raft counts a saved
// term alone as existing state, so a start that failed after saving it
// (the snapshot could not be written: a full disk) left a node that
// never bootstrapped again and, with no configuration, never led. A
// snapshot without the term is a complete start: Raft restores it, and
// the election's term is still 1 or more.
func bootstrapAtState(f *fsm.FSM, applied uint64, stable raft.StableStore, snaps raft.SnapshotStore,
	trans raft.Transport, self raft.Server) error {
	conf := raft.Configuration{Servers: []raft.Server{self}}
	sink, err := snaps.Create(raft.SnapshotVersionMax, applied, 1, conf, applied, trans)
	if err != nil {
		return fmt.Errorf("cluster: bootstrap on restored state: %w", err)
	}
	snap, err := f.Snapshot()
	if err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("cluster: bootstrap on restored state: %w", err)
	}
	// Persist syncs the database, writes the reference and closes the sink.
	if err := snap.Persist(sink); err != nil {
		return fmt.Errorf("cluster: bootstrap on restored state: %w", err)
	}
	if err := stable.SetUint64(keyCurrentTerm, 1); err != nil {
		return fmt.Errorf("cluster: bootstrap on restored state: save term: %w", err)
	}
	return nil
}
