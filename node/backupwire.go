package node

import (
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/broker/registry"
	"github.com/edgechat/edgechat/broker/routes"
	"github.com/edgechat/edgechat/cluster/featurelevel"
	"github.com/edgechat/edgechat/services/archive"
	"github.com/edgechat/edgechat/services/backup"
	"github.com/edgechat/edgechat/services/media/store"
)

// buildBackup builds the backup endpoints and, with --backup-every, the
// scheduler (its store is opened here: an S3 bucket is created at start,
// as media's are). Backups copy the sealed segments the state references
// from this node's archive store.
func (n *Node) buildBackup() error {
	metrics, err := backup.NewMetrics(n.registry)
	if err != nil {
		return err
	}
	src := backup.Source{State: n.backupState, Info: n.backupInfo, RefOf: BackupRefOf}
	if n.segments != nil {
		// Through the archive: a node whose local store lacks segments
		// (it installed a snapshot) copies them from a peer.
		src.Segments = ArchiveSegments{St: n.segments, Open: n.Archive.OpenSegment}
	}
	var sched *backup.Scheduler
	if n.cfg.BackupEvery > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		st, err := backup.OpenStore(ctx, n.cfg.BackupTo, n.cfg.BackupS3())
		cancel()
		if err != nil {
			return fmt.Errorf("node: backup store: %w", err)
		}
		sched, err = backup.NewScheduler(backup.SchedulerConfig{Every: n.cfg.BackupEvery, Keep: n.cfg.BackupKeep,
			Store: st, Region: n.cfg.Region, ClusterID: n.backupCluster, IsLeader: n.raft.IsLeader, Source: src, Metrics: metrics,
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
	if err == nil {
		// WaitReady on a follower compares Raft's applied index, which
		// counts entries queued for the FSM; the read barrier waits for
		// the FSM itself.
		err = n.raft.ReadBarrier(wctx)
	}
	cancel()
	if err != nil {
		return 0, 0, nil, err
	}
	return n.fsm.OpenState()
}

// backupCluster is the cluster's ID for its scheduled backups: the
// archive's owner ID (r/arch/owner), which the leader sets if the
// cluster has none yet (a follower only reads it). There is none below
// feature level 2, and a new cluster's leader raises the level only
// once it has asked its members: it waits for level 2 (at most
// featureLevelWait; a member of an earlier version keeps it lower, and
// the backup is then taken without an ID), so that a new cluster's
// first backup names its cluster too.
func (n *Node) backupCluster(ctx context.Context) (string, error) {
	if !n.raft.IsLeader() {
		return n.Archive.KnownClusterID()
	}
	wctx, cancel := context.WithTimeout(ctx, featureLevelWait)
	defer cancel()
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for n.features.Level() < featurelevel.ArchiveOwner && wctx.Err() == nil {
		select {
		case <-wctx.Done():
		case <-t.C:
		}
	}
	return n.Archive.ClusterID(ctx)
}

// featureLevelWait bounds backupCluster's wait for feature level 2 (the
// leader asks each member, 2 s at most each, and commits the level).
const featureLevelWait = 15 * time.Second

func (n *Node) backupInfo() backup.Manifest {
	st := n.raft.Stats()
	m := backup.Manifest{Node: n.cfg.NodeID, Leader: st.LeaderID, Region: n.cfg.Region}
	m.Cluster, _ = n.Archive.KnownClusterID() // "" when the cluster has none (yet)
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
	db, err := openBadger(dir, log)
	return db, err
}

// RestoreDropPrefixes are the replicated key prefixes a restore removes:
// the old cluster's routes and client registry, which describe
// connections that a new cluster does not have.
func RestoreDropPrefixes() []string {
	return []string{routes.KeyPrefix, registry.KeyPrefix}
}

// RestoreCheck refuses a restored state this version cannot run: one
// whose cluster's feature level is above the level it supports (a
// backup of a newer edgechat; operations.md: do not go back below the
// level, a node would apply the log by older rules).
func RestoreCheck(db *badger.DB) error {
	if l := featurelevel.Of(db); l > featurelevel.Supported {
		return fmt.Errorf("its cluster runs feature level %d and this edgechat supports up to %d: "+
			"restore it with the version that took it, or a newer one", l, featurelevel.Supported)
	}
	return nil
}

// BackupRefOf is archive.SegmentRefOf as backups see it.
func BackupRefOf(k, v []byte) (backup.SegmentRef, bool) {
	r, ok := archive.SegmentRefOf(k, v)
	if !ok {
		return backup.SegmentRef{}, false
	}
	return backup.SegmentRef{Key: r.Key, Size: r.Size, SHA256: hex.EncodeToString(r.SHA256[:])}, true
}

// ArchiveSegments adapts an archive store to backups: the source of a
// backup's segments, and where a restore puts them. Open, when set, reads
// a segment instead of St (archive.Service.OpenSegment).
type ArchiveSegments struct {
	St   archive.SegmentStore
	Open func(ctx context.Context, key string) (io.ReadCloser, error)
}

func (a ArchiveSegments) OpenSegment(ctx context.Context, key string) (io.ReadCloser, error) {
	if a.Open != nil {
		return a.Open(ctx, key)
	}
	return a.St.Get(ctx, key, 0, -1)
}

// PutSegment reads the whole segment first (the store takes bytes;
// segments are at most a few MiB): a reader that fails stores nothing.
func (a ArchiveSegments) PutSegment(ctx context.Context, key string, r io.Reader, size int64) error {
	b, err := io.ReadAll(io.LimitReader(r, size+1))
	if err != nil {
		return err
	}
	if int64(len(b)) != size {
		return fmt.Errorf("node: segment %s: %d bytes, want %d", key, len(b), size)
	}
	return a.St.Put(ctx, key, b)
}

// ListSegments lists the store's segment objects (d/ and g/), for
// restore to refuse a store that holds another cluster's.
func (a ArchiveSegments) ListSegments(ctx context.Context, fn func(key string, size int64) bool) error {
	more := true
	for _, prefix := range []string{"d/", "g/"} {
		if !more {
			break
		}
		if err := a.St.List(ctx, prefix, func(key string, size int64, _ time.Time) bool {
			more = fn(key, size)
			return more
		}); err != nil {
			return err
		}
	}
	return nil
}

func (a ArchiveSegments) DeleteSegment(ctx context.Context, key string) error {
	return a.St.Delete(ctx, key)
}

// OpenRestoreArchive opens the archive store that the first node of a
// restored cluster, with data directory dataDir, will use: kind "local"
// ({data}/archive, the default) or "s3" (bucket on the S3 store of s3,
// created when missing, with the media buckets' defaults). close releases
// it.
func OpenRestoreArchive(ctx context.Context, kind, dataDir string, s3 backup.S3Config, bucket string) (ArchiveSegments, func() error, error) {
	var (
		st  store.Store
		err error
	)
	switch kind {
	case "", MediaStoreLocal:
		// The data directory as serve makes it (0700), not as the
		// store makes its own directories.
		if err := os.MkdirAll(dataDir, 0o700); err != nil {
			return ArchiveSegments{}, nil, fmt.Errorf("node: data dir: %w", err)
		}
		st, err = store.NewLocalTiers(dataDir, store.TierArchive)
	case MediaStoreS3:
		if bucket == "" {
			bucket = DefaultS3ArchiveBucket
		}
		st, err = store.NewS3(ctx, store.S3Config{Endpoint: s3.Endpoint, Region: s3.Region, AccessKey: s3.AccessKey,
			SecretKey: s3.SecretKey, RawBucket: DefaultS3RawBucket, ProcessedBucket: DefaultS3ProcessedBucket,
			ColdBucket: DefaultS3ColdBucket, ArchiveBucket: bucket})
	default:
		return ArchiveSegments{}, nil, fmt.Errorf("node: archive store %q: want local or s3", kind)
	}
	if err != nil {
		return ArchiveSegments{}, nil, fmt.Errorf("node: archive store: %w", err)
	}
	return ArchiveSegments{St: archive.NewObjectSegments(st, kind == MediaStoreS3)}, st.Close, nil
}
