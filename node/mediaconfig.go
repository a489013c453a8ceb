package node

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Media defaults.
const (
	MediaStoreLocal          = "local"
	MediaStoreS3             = "s3"
	RoleMedia                = "media"
	DefaultMediaMaxSize      = 25 << 20
	DefaultMediaMaxDim       = 2560
	DefaultMediaColdAfter    = 90 * 24 * time.Hour
	DefaultMediaQuotaCount   = 500
	DefaultMediaQuotaBytes   = 2 << 30
	DefaultMediaJobLease     = 2 * time.Minute
	minMediaJobLease         = time.Second
	maxMediaJobLease         = time.Hour
	DefaultS3RawBucket       = "edgechat-raw"
	DefaultS3ProcessedBucket = "edgechat-media"
	DefaultS3ColdBucket      = "edgechat-cold"
	maxMediaMaxSize          = 5 << 30
)

// Roles are the optional duties a node takes; every node has them all
// unless --roles names fewer (a cluster keeps processing off small edge
// boxes).
var Roles = []string{RoleMedia}

var mediaSettings = []setting{
	{name: "roles", usage: "the optional roles of this node, comma-separated (media: process uploads), or none", repeat: true, set: func(c *Config, v string) error {
		c.Roles = splitList(v)
		if len(c.Roles) == 1 && c.Roles[0] == "none" {
			c.Roles = []string{} // not nil: nil means every role
		}
		return nil
	}},
	{name: "media-store", usage: "where media lives: local ({data}/media) or s3", set: stringSetter(func(c *Config) *string { return &c.MediaStore })},
	{name: "media-max-size", usage: "the largest upload in bytes", set: int64Setter(func(c *Config) *int64 { return &c.MediaMaxSize })},
	{name: "media-max-dimension", usage: "images are scaled down to at most this many pixels on their longest side", set: intSetter(func(c *Config) *int { return &c.MediaMaxDimension })},
	{name: "media-cold-after", usage: "media not read for this long moves to the cold tier", set: durationSetter(func(c *Config) *time.Duration { return &c.MediaColdAfter })},
	{name: "media-quota-count", usage: "uploads per user per day (UTC)", set: intSetter(func(c *Config) *int { return &c.MediaQuotaCount })},
	{name: "media-quota-bytes", usage: "upload bytes per user per day (UTC)", set: int64Setter(func(c *Config) *int64 { return &c.MediaQuotaBytes })},
	{name: "media-job-lease", usage: "how long a media worker's claim on a job holds (renewed while it works): a worker that dies is replaced after this", set: zeroDefaultSetter(func(c *Config) *time.Duration { return &c.MediaJobLease })},
	{name: "media-public-endpoint", usage: "the object store's address as clients reach it (a CDN), for presigned URLs", set: stringSetter(func(c *Config) *string { return &c.MediaPublicEndpoint })},
	{name: "media-events-secret-file", usage: "a file with the shared secret S3 event notifications to POST /media/events carry as a bearer token", set: stringSetter(func(c *Config) *string { return &c.MediaEventsSecretFile })},
	{name: "clamd-addr", usage: "ClamAV clamd to scan uploads with: tcp:HOST:PORT or unix:PATH", set: stringSetter(func(c *Config) *string { return &c.ClamdAddr })},
	{name: "s3-endpoint", usage: "S3 endpoint (host:port or URL) with --media-store s3 or --backup-to s3://...", set: stringSetter(func(c *Config) *string { return &c.S3Endpoint })},
	{name: "s3-region", usage: "S3 region", set: stringSetter(func(c *Config) *string { return &c.S3Region })},
	{name: "s3-access-key", usage: "S3 access key (default: the environment's AWS credentials)", set: stringSetter(func(c *Config) *string { return &c.S3AccessKey })},
	{name: "s3-secret-key", usage: "S3 secret key", set: stringSetter(func(c *Config) *string { return &c.S3SecretKey })},
	{name: "s3-raw-bucket", usage: "bucket for uploads waiting to be processed", set: stringSetter(func(c *Config) *string { return &c.S3RawBucket })},
	{name: "s3-processed-bucket", usage: "bucket for processed media", set: stringSetter(func(c *Config) *string { return &c.S3ProcessedBucket })},
	{name: "s3-cold-bucket", usage: "bucket for media nobody reads any more", set: stringSetter(func(c *Config) *string { return &c.S3ColdBucket })},
	{name: "s3-cold-storage-class", usage: "instead of a cold bucket, a lifecycle rule moves old media to this storage class", set: stringSetter(func(c *Config) *string { return &c.S3ColdStorageClass })},
}

func splitList(v string) []string {
	var out []string
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func intSetter(f func(c *Config) *int) func(*Config, string) error {
	return func(c *Config, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil {
			return fmt.Errorf("not a number: %q", v)
		}
		*f(c) = n
		return nil
	}
}

func int64Setter(f func(c *Config) *int64) func(*Config, string) error {
	return func(c *Config, v string) error {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return fmt.Errorf("not a number: %q", v)
		}
		*f(c) = n
		return nil
	}
}

// HasRole reports whether this node takes role (all roles when --roles
// is not given).
func (c Config) HasRole(role string) bool {
	return c.Roles == nil || slices.Contains(c.Roles, role)
}

func (c Config) validateMedia() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrConfig}, a...)...)
	}
	for _, r := range c.Roles {
		if !slices.Contains(Roles, r) {
			return bad("--roles: unknown role %q (known: %s)", r, strings.Join(Roles, ", "))
		}
	}
	switch c.MediaStore {
	case MediaStoreLocal:
		if c.S3Endpoint != "" && !c.backupToS3() {
			return bad("--s3-endpoint needs --media-store s3 (or --backup-to s3://...)")
		}
		if !c.HasRole(RoleMedia) {
			// Only the node holding a local upload processes it: this
			// node would take uploads that are never processed.
			return bad("--roles without media needs --media-store s3: with the local store only the node that received an upload can process it")
		}
	case MediaStoreS3:
		if c.S3Endpoint == "" {
			return bad("--media-store s3 needs --s3-endpoint")
		}
		if (c.S3AccessKey == "") != (c.S3SecretKey == "") {
			return bad("--s3-access-key and --s3-secret-key go together")
		}
	default:
		return bad("--media-store %q: want local or s3", c.MediaStore)
	}
	switch {
	case c.MediaMaxSize < 1 || c.MediaMaxSize > maxMediaMaxSize:
		return bad("--media-max-size %d: want 1 to %d bytes", c.MediaMaxSize, int64(maxMediaMaxSize))
	case c.MediaMaxDimension < 64 || c.MediaMaxDimension > 16384:
		return bad("--media-max-dimension %d: want 64 to 16384", c.MediaMaxDimension)
	case c.MediaColdAfter < time.Hour:
		return bad("--media-cold-after %v: want at least 1h", c.MediaColdAfter)
	case c.MediaJobLease != 0 && (c.MediaJobLease < minMediaJobLease || c.MediaJobLease > maxMediaJobLease):
		return bad("--media-job-lease %v: want %v to %v (or 0 for the default)", c.MediaJobLease, minMediaJobLease, maxMediaJobLease)
	case c.MediaQuotaCount < 1 || c.MediaQuotaBytes < 1:
		return bad("--media-quota-count and --media-quota-bytes must be positive")
	case c.MediaPublicEndpoint != "" && !httpURL(c.MediaPublicEndpoint):
		return bad("--media-public-endpoint %q: want an http(s) URL", c.MediaPublicEndpoint)
	case c.ClamdAddr != "" && !strings.HasPrefix(c.ClamdAddr, "tcp:") && !strings.HasPrefix(c.ClamdAddr, "unix:"):
		return bad("--clamd-addr %q: want tcp:HOST:PORT or unix:PATH", c.ClamdAddr)
	}
	return nil
}
