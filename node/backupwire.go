package node

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgechat/edgechat/broker/registry"
	"github.com/edgechat/edgechat/broker/routes"
	"github.com/edgechat/edgechat/services/backup"
)

// buildBackup builds the backup endpoints and, with --backup-every, the
// scheduler (its store is opened here: an S3 bucket is created at start,
// as media's are).
//
// TODO(issue 11): sealed segments. Once services/archive has
// SegmentRefOf and a segment reader (the lead's sealing), Source.RefOf and
// Source.Segments are set here and restore puts the segments back.
func (n *Node) buildBackup() error {
	metrics, err := backup.NewMetrics(n.registry)
	if err != nil {
		return err
	}
	src := backup.Source{State: n.backupState, Info: n.backupInfo}
	var sched *backup.Scheduler
	if n.cfg.BackupEvery > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		st, err := backup.OpenStore(ctx, n.cfg.BackupTo, n.cfg.BackupS3())
		cancel()
		if err != nil {
			return fmt.Errorf("node: backup store: %w", err)
		}
		sched, err = backup.NewScheduler(backup.SchedulerConfig{Every: n.cfg.BackupEvery, Keep: n.cfg.BackupKeep,
			Store: st, IsLeader: n.raft.IsLeader, Source: src, Metrics: metrics,
			Log: n.log.With("component", "backup")})
		if err != nil {
			return err
		}
	}
	n.Backup, err = backup.NewService(src, metrics, sched, n.log.With("component", "backup"))
	return err
}

// BackupS3 is the S3 client configuration of s3:// backup stores: the
// node's --s3-* settings.
func (c Config) BackupS3() backup.S3Config {
	return backup.S3Config{Endpoint: c.S3Endpoint, Region: c.S3Region, AccessKey: c.S3AccessKey, SecretKey: c.S3SecretKey}
}

// backupState is the full state once this node has applied everything
// committed before the call (a follower waits for a fresh heartbeat, the
// leader for a barrier), so that a backup holds every write acknowledged
// before it was asked for.
func (n *Node) backupState(ctx context.Context) (int64, uint64, io.ReadCloser, error) {
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err := n.raft.WaitReady(wctx)
	cancel()
	if err != nil {
		return 0, 0, nil, err
	}
	return n.fsm.OpenState()
}

func (n *Node) backupInfo() backup.Manifest {
	st := n.raft.Stats()
	m := backup.Manifest{Node: n.cfg.NodeID, Leader: st.LeaderID}
	for _, mem := range st.Members {
		m.Members = append(m.Members, mem.Name)
	}
	return m
}

// OpenDatabase opens the Badger database of a data directory with the
// options a node uses (`edgechat restore` fills a new node's with it).
func OpenDatabase(dir string, log *slog.Logger) (*badger.DB, error) {
	if log == nil {
		log = slog.Default()
	}
	db, _, err := openBadger(dir, log, prometheus.NewRegistry())
	return db, err
}

// RestoreDropPrefixes are the replicated key prefixes a restore removes:
// the old cluster's routes and client registry, which describe
// connections that a new cluster does not have.
func RestoreDropPrefixes() []string {
	return []string{routes.KeyPrefix, registry.KeyPrefix}
}
