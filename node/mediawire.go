package node

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/edgechat/edgechat/services/media"
	"github.com/edgechat/edgechat/services/media/process"
	"github.com/edgechat/edgechat/services/media/store"
)

// buildMedia opens the media store and builds the media service (before
// the archive, which checks media messages through it).
func (n *Node) buildMedia(ctx context.Context) error {
	c := n.cfg
	var (
		st     store.Store
		shared bool
		err    error
	)
	switch c.MediaStore {
	case MediaStoreS3:
		st, err = store.NewS3(ctx, store.S3Config{Endpoint: c.S3Endpoint, Region: c.S3Region,
			AccessKey: c.S3AccessKey, SecretKey: c.S3SecretKey, RawBucket: c.S3RawBucket,
			ProcessedBucket: c.S3ProcessedBucket, ColdBucket: c.S3ColdBucket, ColdStorageClass: c.S3ColdStorageClass,
			PublicEndpoint: c.MediaPublicEndpoint, ArchiveBucket: archiveBucket(c)})
		shared = true
	default:
		var local *store.Local
		if local, err = store.NewLocal(filepath.Join(c.DataDir, "media")); err == nil {
			st = local
			n.removeStoreTemps(local)
		}
	}
	if err != nil {
		return fmt.Errorf("node: media store: %w", err)
	}
	n.mediaStore = st
	tmp := filepath.Join(c.DataDir, "tmp")
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		return fmt.Errorf("node: media temp dir: %w", err)
	}
	n.emptyMediaTempDir(tmp)
	secret, err := readSecretFile(c.MediaEventsSecretFile)
	if err != nil {
		return err
	}
	proc := &processor{cfg: process.Config{MaxDimension: c.MediaMaxDimension, ClamdAddr: c.ClamdAddr, TempDir: tmp}}
	n.Media, err = media.New(media.Config{Node: c.NodeID, Worker: c.HasRole(RoleMedia), MaxSize: c.MediaMaxSize,
		QuotaCount: c.MediaQuotaCount, QuotaBytes: c.MediaQuotaBytes, SharedStore: shared, TempDir: tmp,
		JobLease: c.MediaJobLease, ColdAfter: c.MediaColdAfter, ColdStorageClass: c.S3ColdStorageClass,
		SweepEvery: c.MediaSweepEvery, EventsSecret: secret},
		media.Deps{DB: n.db, Proposer: n.raft, FSM: n.fsm, Store: st, Processor: proc, Publisher: n.link,
			Groups: membership{n.Users}, Peers: peerHTTP{n}, PeerTransport: n.peerTransport(), Tokens: n.Auth, Leadership: n.raft,
			Logger: n.log, Registerer: n.registry})
	if err != nil {
		return err
	}
	proc.cfg.Observe = func(step process.Step, took time.Duration, err error) { n.Media.ObserveStep(string(step), took, err) }
	return nil
}

// removeStoreTemps and emptyMediaTempDir delete what a node killed
// while it received an upload or processed one left behind: the
// part-written files of the local store, and everything in {data}/tmp,
// which holds the copies and outputs of jobs only. Nothing names these
// files after a restart (a job runs again with new ones), so each crash
// kept up to an upload or more on the disk for good. They run at start:
// the node holds its data directory (its database is open) and the media
// service has not started, so nothing writes there. A failure is
// logged; the node serves anyway.
func (n *Node) removeStoreTemps(local *store.Local) {
	if k, err := local.RemoveTemps(); err != nil {
		n.log.Warn("media store: removing files left by interrupted uploads", "err", err)
	} else if k > 0 {
		n.log.Info("media store: removed files left by interrupted uploads", "files", k)
	}
}

func (n *Node) emptyMediaTempDir(tmp string) {
	ents, err := os.ReadDir(tmp)
	if err != nil {
		n.log.Warn("media: reading the temp dir", "err", err)
		return
	}
	k := 0
	for _, e := range ents {
		if err := os.RemoveAll(filepath.Join(tmp, e.Name())); err != nil {
			n.log.Warn("media: removing a file left in the temp dir", "file", e.Name(), "err", err)
			continue
		}
		k++
	}
	if k > 0 {
		n.log.Info("media: removed files left in the temp dir by interrupted jobs", "files", k)
	}
}

// archiveBucket is the S3 bucket of sealed segments, when they go to S3.
func archiveBucket(c Config) string {
	if c.archiveStoreKind() == MediaStoreS3 {
		return c.S3ArchiveBucket
	}
	return ""
}

// readSecretFile reads a secret from a file ("" when no file is named),
// trimming the newline editors add.
func readSecretFile(path string) (string, error) {
	if path == "" {
		return "", nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("node: %w: %w", ErrConfig, err)
	}
	s := strings.TrimSpace(string(b))
	if len(s) < 16 {
		return "", fmt.Errorf("node: %w: the secret in %s is shorter than 16 characters", ErrConfig, path)
	}
	return s, nil
}

// peerTransport trusts what this node's own HTTPS trusts (a cluster
// shares its certificate authority).
func (n *Node) peerTransport() http.RoundTripper {
	if n.tls == nil {
		return nil
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.TLSClientConfig = n.tls.Clone()
	// The server certificate is no client certificate, and the peer's
	// HTTPS asks for one only from links (withLinkAuth).
	t.TLSClientConfig.Certificates, t.TLSClientConfig.GetCertificate = nil, nil
	t.TLSClientConfig.ClientCAs, t.TLSClientConfig.ClientAuth = nil, tls.NoClientCert
	t.TLSClientConfig.GetConfigForClient = nil
	return t
}

// processor adapts package process to the media service.
type processor struct{ cfg process.Config }

func (p processor) Process(ctx context.Context, path, name, claimedType string) (media.Processed, error) {
	r, err := process.Process(ctx, p.cfg, path, name, claimedType)
	if err != nil {
		return media.Processed{}, err
	}
	// What is served is what the record describes (a WebP upload is
	// served as the JPEG or PNG it was re-encoded to).
	return media.Processed{Kind: r.Kind, MIME: r.OutputMIME, Ext: r.OutputExt, Width: r.Width, Height: r.Height,
		Duration: r.Duration, Camera: r.Camera, TakenAt: r.TakenAt, Placeholder: r.Placeholder, Notes: r.Notes,
		Output: r.Output, OutputMIME: r.OutputMIME, Preview: r.Preview, PreviewMIME: r.PreviewMIME}, nil
}

func (p processor) Reason(err error) string { return process.Reason(err) }

// peerHTTP finds another node's HTTP API through the cluster.
type peerHTTP struct{ n *Node }

func (p peerHTTP) HTTPURL(ctx context.Context, node string) (string, error) {
	for _, m := range p.n.raft.Members() {
		if m.Name == node {
			info, err := p.n.peerInfo(ctx, m)
			if err != nil {
				return "", err
			}
			return peerHTTPURL(m, info), nil
		}
	}
	return "", fmt.Errorf("node %q is not a member", node)
}

// mediaOrigins are the origins of the URLs GET /media/{id} redirects to
// (a presigning store: S3's --media-public-endpoint, else its endpoint,
// with the bucket in the host name where the store signs so), found by
// presigning a URL of each tier downloads come from: signing is local.
// The web page's policy must allow them, or no media loads. None for a
// store that serves through the node.
func (n *Node) mediaOrigins() []string {
	ps, ok := n.mediaStore.(store.Presigner)
	if !ok {
		return nil
	}
	var out []string
	for _, tier := range []store.Tier{store.TierProcessed, store.TierCold} {
		u, err := ps.PresignGet(context.Background(), tier, "origin-probe", time.Minute, "")
		if err != nil {
			n.log.Warn("web client: the media store's origin is unknown: media will not load in the page", "tier", tier, "err", err)
			continue
		}
		if o := u.Scheme + "://" + u.Host; !slices.Contains(out, o) {
			out = append(out, o)
		}
	}
	return out
}
