package cluster

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"
)

// Recovering a node whose cluster lost its majority for good.
//
// `edgechat recover` (docs/operations.md, "Losing the majority") makes a
// stopped node the only voter of its cluster, keeping every entry of its
// log: started again, it elects itself, commits its whole log (entries
// the lost majority may not have committed included: Raft's caveat) and
// serves as a one-node cluster that others join as usual.
//
// hashicorp/raft's RecoverCluster is not used: it applies the log to the
// FSM it is given, snapshots it and deletes the log, and the command
// handlers of this node's FSM are registered by every service when the
// node starts (node.New). A bare FSM would skip the commands it does not
// know and still count them applied: everything after the database's
// applied index would be lost. Instead the new configuration is appended
// to the log, as a configuration change committed by a leader would be:
// Raft takes the latest configuration of its log at start, and the
// entries are applied by the full node once it has elected itself.

var (
	// ErrNoRaftState: the directory holds no Raft log or snapshot, so
	// there is nothing to recover.
	ErrNoRaftState = errors.New("cluster: no raft state to recover")
	// ErrNotRecoverable: the node's Raft state does not make it a
	// survivor that holds what its cluster committed.
	ErrNotRecoverable = errors.New("cluster: this node cannot be recovered alone")
)

// Recovery says what RecoverAlone found and did.
type Recovery struct {
	Node string
	// Old is the latest configuration the node had (its last one in
	// the log, else its latest snapshot's), at OldIndex.
	Old      []raft.Server
	OldIndex uint64
	// LastIndex and LastTerm are the last entry the node holds (its log,
	// else its latest snapshot) before the recovery.
	LastIndex, LastTerm uint64
	// SnapshotIndex is the latest snapshot's index (0: none).
	SnapshotIndex uint64
	// Written is the index of the configuration entry written; 0 when
	// the node already was the only voter (nothing written).
	Written uint64
}

// RecoverAlone makes node the only voter of the Raft state in
// dataDir/raft, keeping every entry (see above). The node must be
// stopped: a running one holds the directory's lock (ErrDataDirLocked).
// Running it again on a recovered node writes nothing.
func RecoverAlone(dataDir, node string, logger *slog.Logger) (rec Recovery, err error) {
	rec.Node = node
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	dir := filepath.Join(dataDir, "raft")
	walDir := filepath.Join(dir, "wal")
	if _, err := os.Stat(walDir); errors.Is(err, fs.ErrNotExist) {
		return rec, fmt.Errorf("%w: %s has no raft log (%s): is it a node's data directory?", ErrNoRaftState, dataDir, walDir)
	} else if err != nil {
		return rec, fmt.Errorf("cluster: %w", err)
	}
	unlock, err := lockDir(dir)
	if err != nil {
		return rec, err
	}
	defer func() {
		if uerr := unlock(); err == nil && uerr != nil {
			err = fmt.Errorf("cluster: %w", uerr)
		}
	}()
	if _, err := os.Stat(filepath.Join(dir, voteGuardFile)); err == nil {
		// openVoteGuard: the node started without its Raft state and has
		// not caught up with its cluster since; it may lack committed
		// entries.
		return rec, fmt.Errorf("%w: it joined its cluster (or started without its raft state) and had not yet caught up "+
			"with what the cluster committed (%s): it may lack acknowledged messages; restore a backup instead", ErrNotRecoverable,
			filepath.Join(dir, voteGuardFile))
	}
	hl := newHclog(logger, "raft", hclog.Warn)
	meta := &metadb.BoltMetaDB{}
	defer meta.Close()
	w, err := wal.Open(walDir, wal.WithLogger(hl.Named("wal")), wal.WithMetaStore(meta))
	if err != nil {
		return rec, fmt.Errorf("cluster: open raft log %s: %w", walDir, err)
	}
	defer func() {
		if cerr := w.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("cluster: close raft log: %w", cerr)
		}
	}()
	snaps, err := raft.NewFileSnapshotStoreWithLogger(dir, snapshotsRetained, hl.Named("snapshot"))
	if err != nil {
		return rec, fmt.Errorf("cluster: open snapshots: %w", err)
	}
	if ok, err := raft.HasExistingState(w, w, snaps); err != nil {
		return rec, fmt.Errorf("cluster: inspect raft state: %w", err)
	} else if !ok {
		return rec, fmt.Errorf("%w: %s holds no raft log, term or snapshot (a node that never started, or was emptied)", ErrNoRaftState, dir)
	}

	// The latest configuration, as raft.NewRaft finds it: the latest
	// snapshot's, then every configuration entry of the log after it.
	list, err := snaps.List()
	if err != nil {
		return rec, fmt.Errorf("cluster: list snapshots: %w", err)
	}
	if len(list) > 0 {
		s := list[0]
		rec.SnapshotIndex, rec.LastIndex, rec.LastTerm = s.Index, s.Index, s.Term
		rec.Old, rec.OldIndex = s.Configuration.Servers, s.ConfigurationIndex
	}
	first, err := w.FirstIndex()
	if err != nil {
		return rec, fmt.Errorf("cluster: raft log: %w", err)
	}
	last, err := w.LastIndex()
	if err != nil {
		return rec, fmt.Errorf("cluster: raft log: %w", err)
	}
	for i := max(first, rec.SnapshotIndex+1); last > 0 && i <= last; i++ {
		var l raft.Log
		if err := w.GetLog(i, &l); err != nil {
			return rec, fmt.Errorf("cluster: raft log entry %d: %w", i, err)
		}
		if l.Type == raft.LogConfiguration {
			c, err := decodeConfiguration(l.Data)
			if err != nil {
				return rec, fmt.Errorf("cluster: raft log entry %d: %w", i, err)
			}
			rec.Old, rec.OldIndex = c.Servers, l.Index
		}
		rec.LastIndex, rec.LastTerm = l.Index, l.Term
	}

	var self *raft.Server
	for i, s := range rec.Old {
		if string(s.ID) == node {
			self = &rec.Old[i]
		}
	}
	switch {
	case len(rec.Old) == 0:
		return rec, fmt.Errorf("%w: its raft state holds no configuration (it never was a member)", ErrNotRecoverable)
	case self == nil:
		return rec, fmt.Errorf("%w: node %s is not in its last configuration (%s, index %d): it was removed; restore a backup instead",
			ErrNotRecoverable, node, FormatServers(rec.Old), rec.OldIndex)
	case self.Suffrage != raft.Voter:
		return rec, fmt.Errorf("%w: node %s was no voter (%s) and may lack committed entries; restore a backup instead",
			ErrNotRecoverable, node, self.Suffrage)
	case len(rec.Old) == 1:
		return rec, nil // already the only voter: nothing to do
	}

	alone := raft.Configuration{Servers: []raft.Server{{Suffrage: raft.Voter, ID: self.ID, Address: self.Address}}}
	if last > 0 && last < rec.SnapshotIndex {
		// The log ends before the latest snapshot (one received from a
		// leader): its entries are all in the snapshot, and the new one
		// must follow the snapshot.
		if err := w.DeleteRange(first, last); err != nil {
			return rec, fmt.Errorf("cluster: dropping the log behind the snapshot: %w", err)
		}
	}
	entry := &raft.Log{Index: rec.LastIndex + 1, Term: rec.LastTerm, Type: raft.LogConfiguration,
		Data: raft.EncodeConfiguration(alone), AppendedAt: time.Now()}
	if err := w.StoreLogs([]*raft.Log{entry}); err != nil {
		return rec, fmt.Errorf("cluster: writing the new configuration: %w", err)
	}
	rec.Written = entry.Index
	return rec, nil
}

// decodeConfiguration is raft.DecodeConfiguration without its panic.
func decodeConfiguration(b []byte) (c raft.Configuration, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("bad configuration entry: %v", r)
		}
	}()
	return raft.DecodeConfiguration(b), nil
}

// FormatServers lists servers as "n1 (voter, 10.0.0.1:7946), ...".
func FormatServers(servers []raft.Server) string {
	s := ""
	for i, v := range servers {
		if i > 0 {
			s += ", "
		}
		s += fmt.Sprintf("%s (%s, %s)", v.ID, v.Suffrage, v.Address)
	}
	return s
}
