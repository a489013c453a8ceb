package cluster

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"
)

// A survivor whose latest state is in a snapshot and in the log after it
// (keys before and after the snapshot), recovered alone, elects itself,
// keeps every key and commits new ones; recovering it again writes
// nothing; a running node and a directory without Raft state are refused.
func TestRecoverAloneKeepsSnapshotAndLog(t *testing.T) {
	ms := startCluster(t, 3)
	leader := waitVoters(t, ms, 3)
	s := followerOf(ms, leader)
	before := keyList("before", 20)
	proposeKeys(t, leader, before...)
	waitKeys(t, ms, before...)
	if err := s.Snapshot(t.Context()); err != nil {
		t.Fatal(err)
	}
	after := keyList("after", 20)
	proposeKeys(t, leader, after...)
	waitKeys(t, ms, after...)

	if _, err := RecoverAlone(s.dir, s.name, nil); !errors.Is(err, ErrDataDirLocked) {
		t.Fatalf("recover of a running node: %v, want ErrDataDirLocked", err)
	}
	if _, err := RecoverAlone(t.TempDir(), s.name, nil); !errors.Is(err, ErrNoRaftState) {
		t.Fatalf("recover of an empty directory: %v, want ErrNoRaftState", err)
	}
	for _, m := range ms {
		if m != s {
			m.stop(t)
		}
	}
	s.stop(t)

	rec, err := RecoverAlone(s.dir, s.name, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(rec.Old) != 3 || rec.SnapshotIndex == 0 || rec.LastIndex <= rec.SnapshotIndex || rec.Written != rec.LastIndex+1 {
		t.Fatalf("recovery %+v: want 3 old members, a snapshot, log after it and the entry written after the last", rec)
	}
	again, err := RecoverAlone(s.dir, s.name, nil)
	if err != nil || again.Written != 0 || len(again.Old) != 1 || again.LastIndex != rec.Written {
		t.Fatalf("recovery again: %+v, %v; want nothing written, one member", again, err)
	}

	s.restart(t)
	waitReady(t, s.Raft)
	if !s.IsLeader() {
		t.Fatal("the recovered node does not lead")
	}
	waitKeys(t, []*member{s}, append(before, after...)...)
	more := keyList("more", 5)
	proposeKeys(t, s, more...)
	waitKeys(t, []*member{s}, more...)
}

// A node that is no member of its last configuration is refused.
func TestRecoverAloneRefusesANonMember(t *testing.T) {
	ms := startCluster(t, 1)
	ms[0].stop(t)
	if _, err := RecoverAlone(ms[0].dir, "n9", nil); !errors.Is(err, ErrNotRecoverable) {
		t.Fatalf("recover as n9: %v, want ErrNotRecoverable", err)
	}
}

// A node whose log is empty after its latest snapshot (a follower that
// has just installed one from its leader: raft-wal is monotonic, Raft
// empties it), or ends before it, gets the new configuration right after
// the snapshot, where Raft looks for it at start.
func TestRecoverAloneAfterAnInstalledSnapshot(t *testing.T) {
	for _, tc := range []struct {
		name string
		log  []uint64 // entries left in the log
	}{{"empty log", nil}, {"log behind the snapshot", []uint64{5, 6, 7}}} {
		t.Run(tc.name, func(t *testing.T) {
			dataDir := t.TempDir()
			dir := filepath.Join(dataDir, "raft")
			if err := os.MkdirAll(filepath.Join(dir, "wal"), 0o750); err != nil {
				t.Fatal(err)
			}
			old := raft.Configuration{Servers: []raft.Server{
				{Suffrage: raft.Voter, ID: "n1", Address: "127.0.0.1:1"},
				{Suffrage: raft.Voter, ID: "n2", Address: "127.0.0.1:2"},
				{Suffrage: raft.Voter, ID: "n3", Address: "127.0.0.1:3"},
			}}
			snaps, err := raft.NewFileSnapshotStore(dir, snapshotsRetained, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			_, trans := raft.NewInmemTransport("127.0.0.1:2")
			sink, err := snaps.Create(raft.SnapshotVersionMax, 100, 4, old, 90, trans)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := sink.Write([]byte("state")); err != nil {
				t.Fatal(err)
			}
			if err := sink.Close(); err != nil {
				t.Fatal(err)
			}
			meta := &metadb.BoltMetaDB{}
			w, err := wal.Open(filepath.Join(dir, "wal"), wal.WithMetaStore(meta))
			if err != nil {
				t.Fatal(err)
			}
			for _, i := range tc.log {
				if err := w.StoreLogs([]*raft.Log{{Index: i, Term: 2, Type: raft.LogCommand, Data: []byte("x")}}); err != nil {
					t.Fatal(err)
				}
			}
			if err := w.SetUint64(keyCurrentTerm, 4); err != nil {
				t.Fatal(err)
			}
			_ = w.Close()
			_ = meta.Close()

			rec, err := RecoverAlone(dataDir, "n2", nil)
			if err != nil {
				t.Fatal(err)
			}
			if rec.Written != 101 || rec.LastIndex != 100 || rec.LastTerm != 4 || len(rec.Old) != 3 {
				t.Fatalf("recovery %+v: want the configuration written at 101, after the snapshot at 100 (term 4)", rec)
			}
			again, err := RecoverAlone(dataDir, "n2", nil)
			if err != nil || again.Written != 0 || len(again.Old) != 1 || again.Old[0].ID != "n2" || again.OldIndex != 101 {
				t.Fatalf("recovery again: %+v, %v; want n2 alone since 101, nothing written", again, err)
			}
		})
	}
}
