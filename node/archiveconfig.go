package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/edgechat/edgechat/internal/httpapi"
	"github.com/edgechat/edgechat/internal/ratelimit"
	"github.com/edgechat/edgechat/services/archive"
	"github.com/edgechat/edgechat/services/media/store"
	"github.com/edgechat/edgechat/services/users"
)

// Archive tiering defaults (issue 11; docs/protocol.md "Archive tiers").
const (
	DefaultS3ArchiveBucket   = "edgechat-archive"
	DefaultArchiveCacheBytes = 32 << 20
	minArchiveSealEvery      = 10 * time.Millisecond
	minArchiveOrphanGrace    = time.Second
	maxArchiveCacheBytes     = 16 << 30
	archiveStoreFollowsMedia = ""
)

var archiveSettings = []setting{
	{name: "archive-store", usage: "where sealed message segments live: local ({data}/archive) or s3 (the --s3-* store, bucket --s3-archive-bucket; needs --media-store s3); default: as --media-store. Every node of a cluster must have the same (and the same --s3-archive-bucket): a node that differs is refused when it joins", set: stringSetter(func(c *Config) *string { return &c.ArchiveStore })},
	{name: "s3-archive-bucket", usage: "bucket for sealed message segments (the same on every node of a cluster, and a bucket of its own for each cluster)", set: stringSetter(func(c *Config) *string { return &c.S3ArchiveBucket })},
	{name: "archive-hot-age", usage: "messages older than this are sealed into segments (each conversation's newest message stays hot)", set: zeroDefaultSetter(func(c *Config) *time.Duration { return &c.ArchiveHotAge })},
	{name: "archive-local-budget", usage: "bytes of hot history beyond which the oldest messages are sealed whatever their age (0: no budget)", set: int64Setter(func(c *Config) *int64 { return &c.ArchiveLocalBudget })},
	{name: "archive-seal-every", usage: "time between the sealer's sweeps", set: zeroDefaultSetter(func(c *Config) *time.Duration { return &c.ArchiveSealEvery })},
	{name: "archive-orphan-grace", usage: "segment objects no index entry references are deleted once this node has seen them so for this long", set: zeroDefaultSetter(func(c *Config) *time.Duration { return &c.ArchiveOrphanGrace })},
	{name: "archive-cache-bytes", usage: "bytes of decoded sealed blocks each node caches", set: int64Setter(func(c *Config) *int64 { return &c.ArchiveCacheBytes })},
	{name: "retention-days", usage: "messages older than this many days are deleted from every tier (0: kept forever); a group's own retentionDays applies when shorter", set: intSetter(func(c *Config) *int { return &c.RetentionDays })},
	{name: "archive-seal-pause-at", usage: "for crash tests: the sealer stops for good at this step of its first seal (before-upload, after-upload or after-commit)", set: stringSetter(func(c *Config) *string { return &c.ArchiveSealPauseAt })},
}

// ArchiveStoreKind is the archive store in effect: local or s3 (edgechat
// restore puts a backup's segments there).
func (c Config) ArchiveStoreKind() string { return c.archiveStoreKind() }

// archiveStoreKind is the archive store in effect.
func (c Config) archiveStoreKind() string {
	if c.ArchiveStore == archiveStoreFollowsMedia {
		return c.MediaStore
	}
	return c.ArchiveStore
}

func (c Config) validateArchive() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrConfig}, a...)...)
	}
	switch c.archiveStoreKind() {
	case MediaStoreLocal:
	case MediaStoreS3:
		if c.MediaStore != MediaStoreS3 {
			return bad("--archive-store s3 needs --media-store s3 (the same S3 store, its own bucket)")
		}
		if c.S3ArchiveBucket == "" {
			return bad("--archive-store s3 needs --s3-archive-bucket")
		}
	default:
		return bad("--archive-store %q: want local or s3", c.ArchiveStore)
	}
	switch c.ArchiveSealPauseAt {
	case "", archive.SealStepBeforeUpload, archive.SealStepAfterUpload, archive.SealStepAfterCommit:
	default:
		return bad("--archive-seal-pause-at %q: want before-upload, after-upload or after-commit", c.ArchiveSealPauseAt)
	}
	switch {
	case c.RetentionDays < 0 || c.RetentionDays > users.MaxRetentionDays:
		return bad("--retention-days %d: want 0 (forever) to %d", c.RetentionDays, users.MaxRetentionDays)
	case c.ArchiveLocalBudget < 0:
		return bad("--archive-local-budget must not be negative")
	case c.ArchiveSealEvery != 0 && c.ArchiveSealEvery < minArchiveSealEvery:
		return bad("--archive-seal-every %v: want at least %v", c.ArchiveSealEvery, minArchiveSealEvery)
	case c.ArchiveOrphanGrace != 0 && c.ArchiveOrphanGrace < minArchiveOrphanGrace:
		return bad("--archive-orphan-grace %v: want at least %v", c.ArchiveOrphanGrace, minArchiveOrphanGrace)
	case c.ArchiveCacheBytes < 0 || c.ArchiveCacheBytes > maxArchiveCacheBytes:
		return bad("--archive-cache-bytes %d: want 0 to %d", c.ArchiveCacheBytes, int64(maxArchiveCacheBytes))
	}
	return nil
}

// buildArchiveStore opens where sealed segments live: the archive bucket
// of the media S3 store, or {data}/archive.
func (n *Node) buildArchiveStore() (archive.SegmentStore, error) {
	if n.cfg.archiveStoreKind() == MediaStoreS3 {
		return archive.NewObjectSegments(n.mediaStore, true), nil
	}
	st, err := store.NewLocalTiers(n.cfg.DataDir, store.TierArchive)
	if err != nil {
		return nil, fmt.Errorf("node: archive store: %w", err)
	}
	return archive.NewObjectSegments(st, false), nil
}

// archiveDir is the local archive store's directory.
func (c Config) archiveDir() string { return filepath.Join(c.DataDir, string(store.TierArchive)) }

// sealConfig is the sealer's configuration.
func (n *Node) sealConfig() archive.SealConfig {
	c := n.cfg
	sc := archive.SealConfig{HotAge: c.ArchiveHotAge, LocalBudget: c.ArchiveLocalBudget, Every: c.ArchiveSealEvery, OrphanGrace: c.ArchiveOrphanGrace,
		Retention: archive.RetentionPolicy{Days: c.RetentionDays, GroupDays: func(gid string) int {
			g, err := n.Users.Group(gid)
			if err != nil {
				return 0
			}
			return g.RetentionDays
		}, StraddlerLag: c.RetentionStraddlerLag}}
	if at := c.ArchiveSealPauseAt; at != "" {
		paused := make(chan struct{})
		sc.Step = func(step string) {
			if step == at {
				n.log.Warn("sealer paused (--archive-seal-pause-at)", "step", step)
				<-paused // never closed: the crash test kills the process here
			}
		}
	}
	return sc
}

// SweepArchive runs one sweep of the archive as of now, with this node's
// configuration: retention, then sealing and garbage collection. The
// sealer does it on its own every --archive-seal-every; tests and
// operators call it to look ahead in time.
func (n *Node) SweepArchive(ctx context.Context, now time.Time) (archive.RetentionStats, archive.SealStats, error) {
	cfg := n.sealConfig()
	ex, err := n.Archive.ExpireOnce(ctx, cfg.Retention, now)
	if err != nil {
		return ex, archive.SealStats{}, err
	}
	st, err := n.Archive.SealOnce(ctx, cfg, now)
	return ex, st, err
}

// fetchSegment reads a segment object from the first other node that
// holds it (GET /admin/archive/segments/{key} with a short admin token
// signed by this node): a local store lacks the segments sealed before
// this node installed a snapshot.
func (n *Node) fetchSegment(ctx context.Context, key string) (io.ReadCloser, error) {
	tok, err := n.Auth.MintAccessToken("operator", true)
	if err != nil {
		return nil, err
	}
	client := &http.Client{Transport: n.peerTransport(), Timeout: time.Minute}
	var errs []error
	for _, m := range n.raft.Members() {
		if m.Name == n.cfg.NodeID {
			continue
		}
		info, err := n.peerInfo(ctx, m)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", m.Name, err))
			continue
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(peerHTTPURL(m, info), "/")+"/admin/archive/segments/"+key, nil)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Authorization", "Bearer "+tok)
		// The copy is this node's own request: the peer's gateway does not
		// limit it as an admin's (the admin class, one bucket for every
		// node's "operator") or charge it to this node's address, which
		// the media reads this node makes for its users share there.
		req.Header.Set(httpapi.HeaderPeer, n.cfg.NodeID)
		// A peer that does not know this node's address yet (or an older
		// version) still limits it: a node copying more than a burst (a
		// backup from a node that installed a snapshot) waits out its 429s
		// rather than fail.
		resp, err := ratelimit.DoHTTP(client, req, 0)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", m.Name, err))
			continue
		}
		if resp.StatusCode == http.StatusOK {
			return resp.Body, nil
		}
		resp.Body.Close()
		errs = append(errs, fmt.Errorf("%s: %s", m.Name, resp.Status))
	}
	return nil, fmt.Errorf("node: segment %s: %w", key, errors.Join(errs...))
}

// archiveStoreID names where this node keeps sealed segments, as the
// members compare it: "local" (each node's {data}/archive) or "s3 bucket
// NAME". The S3 endpoint is not part of it (the nodes may reach one
// store by different names).
func (c Config) archiveStoreID() string {
	if c.archiveStoreKind() == MediaStoreS3 {
		return "s3 bucket " + c.S3ArchiveBucket
	}
	return MediaStoreLocal
}

// checkArchiveStores, on the leader before it seals, asks every member
// where it keeps sealed segments: a member whose store differs from this
// node's would read the segments sealed now from where they are not (an
// S3 node ignores the copy a local store's seal carries; a node on
// another bucket finds nothing), so sealing waits until they agree. A
// member that does not answer, or of an earlier version (it says
// nothing), is not counted.
func (n *Node) checkArchiveStores(ctx context.Context) (mismatched int, err error) {
	own := n.cfg.archiveStoreID()
	var others []string
	for _, m := range n.raft.Members() {
		if m.Name == n.cfg.NodeID {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		info, err := n.peerInfo(cctx, m)
		cancel()
		if err != nil || info.ArchiveStore == "" || info.ArchiveStore == own {
			continue
		}
		mismatched++
		others = append(others, m.Name+" keeps them in "+info.ArchiveStore)
	}
	if mismatched > 0 {
		return mismatched, fmt.Errorf("this node (%s) keeps sealed message segments in %s, but %s: every node of a cluster must use the same --archive-store (and, with s3, --s3-archive-bucket)",
			n.cfg.NodeID, own, strings.Join(others, ", "))
	}
	return 0, nil
}

// archiveStoreOdd tells the leader, before it refuses a joiner whose
// archive store differs from its own, whether the other members that
// answer all keep segments in the joiner's store: then this node is the
// one configured apart (its sealing stops and says so), and the joiner
// is not refused. No other member answering: the joiner is refused.
func (n *Node) archiveStoreOdd(ctx context.Context, joiner, store string) bool {
	answered := 0
	for _, m := range n.raft.Members() {
		if m.Name == n.cfg.NodeID || m.Name == joiner {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		info, err := n.peerInfo(cctx, m)
		cancel()
		if err != nil || info.ArchiveStore == "" {
			continue
		}
		if info.ArchiveStore != store {
			return false
		}
		answered++
	}
	if answered > 0 {
		n.log.Error("a node joins with an archive store the other members share and this leader does not: this node's --archive-store (or --s3-archive-bucket) is the odd one",
			"joiner", joiner, "store", store, "this_node", n.cfg.archiveStoreID())
	}
	return answered > 0
}

// archiveStoreFile holds where the node kept sealed segments when it
// last started (archiveStoreID).
const archiveStoreFile = "archive-store"

// checkArchiveStoreFile refuses to start a node on another archive store
// than the one its data directory was used with: the segments its state
// indexes stay where they were sealed, and every read of them would
// answer 500 (a lone node, or a whole cluster restarted so, asks nobody:
// the join and sealing checks do not see it). A directory without the
// file (new, or from before the file existed) takes id (wrote: true).
func checkArchiveStoreFile(dir, id string) (wrote bool, err error) {
	path := filepath.Join(dir, archiveStoreFile)
	b, err := os.ReadFile(path)
	switch {
	case err == nil && strings.TrimSpace(string(b)) != "":
		if had := strings.TrimSpace(string(b)); had != id {
			return false, fmt.Errorf("%w: this node kept sealed message segments in %s, and is started with %s (--archive-store, --s3-archive-bucket): "+
				"the segments it sealed stay in %s, and reading them would fail; start it as before, or, once every segment is copied "+
				"to the new store under the same keys (every node of the cluster switching together), delete %s (docs/operations.md, Archive tiers)",
				ErrConfig, had, id, had, path)
		}
		return false, nil
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return false, fmt.Errorf("node: reading %s: %w", path, err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(id+"\n"), 0o600); err != nil {
		return false, fmt.Errorf("node: writing %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return false, fmt.Errorf("node: writing %s: %w", path, err)
	}
	return true, nil
}
