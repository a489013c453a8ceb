package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"
)

// Tier names where an object lives. The service picks the tier; the store
// only maps it to a directory (Local) or a bucket (S3).
type Tier string

const (
	TierRaw       Tier = "raw"       // uploads as the client sent them
	TierProcessed Tier = "processed" // thumbnails, transcodes, stripped images
	TierCold      Tier = "cold"      // media nobody read for a while
	// TierArchive holds the archive's sealed message segments (issue 11),
	// not media: a bucket of its own on S3, {data}/archive locally.
	TierArchive Tier = "archive"
)

// AllTiers lists every media tier, in the order the service reports them
// (TierArchive is not media's).
func AllTiers() []Tier { return []Tier{TierRaw, TierProcessed, TierCold} }

func (t Tier) valid() bool {
	return t == TierRaw || t == TierProcessed || t == TierCold || t == TierArchive
}

// Object describes a stored object. ETag is opaque: equal ETags mean equal
// bytes within one store, but Local and S3 compute them differently, so
// never compare an ETag across stores.
type Object struct {
	Key         string
	Size        int64
	ContentType string
	ETag        string
	ModTime     time.Time
}

var (
	// ErrNotFound is wrapped by every store for a key (or multipart upload)
	// that does not exist; test with errors.Is.
	ErrNotFound = errors.New("store: object not found")
	// ErrInvalidKey is wrapped when a key is refused (see ValidKey).
	ErrInvalidKey = errors.New("store: invalid key")
	// ErrInvalidRange is wrapped by Get for a negative offset or length
	// (length -1 aside) and for an offset at or past the end of the object
	// (offset 0 of an empty object aside).
	ErrInvalidRange = errors.New("store: invalid range")
	// ErrUnavailable is wrapped when the store answered that it cannot
	// serve now, whichever the key: S3's 5xx (500 InternalError, 503
	// SlowDown when it throttles, a gateway's 502 or 504), 429 and 408.
	// The next request would most likely get the same answer.
	ErrUnavailable = errors.New("store: the object store cannot serve now")
)

// Store keeps media bytes in tiers. Implementations are safe for
// concurrent use.
type Store interface {
	// Put stores r (size bytes, -1 when unknown) under key, replacing any
	// object there; it never buffers the whole object in memory. A reader
	// that ends before size bytes, or delivers more, fails the Put and
	// leaves the previous object (if any) in place.
	Put(ctx context.Context, tier Tier, key string, r io.Reader, size int64, contentType string) (Object, error)
	// Get streams [offset, offset+length) (length -1: to the end; a range
	// past the end is cut short). The Object describes the whole object,
	// not the range. The caller closes the reader.
	Get(ctx context.Context, tier Tier, key string, offset, length int64) (io.ReadCloser, Object, error)
	Stat(ctx context.Context, tier Tier, key string) (Object, error)
	// Delete removes key; a missing key is not an error.
	Delete(ctx context.Context, tier Tier, key string) error
	// Move puts key of tier from into tier to (replacing what is there) and
	// removes it from from: a server-side copy + delete on S3, a rename on
	// the local store. A missing source is ErrNotFound.
	Move(ctx context.Context, from, to Tier, key string) error
	// List calls fn for every object of tier whose key starts with prefix
	// until fn returns false. The order is unspecified (S3 lists in
	// lexical order, the local store in directory order).
	List(ctx context.Context, tier Tier, prefix string, fn func(Object) bool) error
	Close() error
}

// Part is one uploaded part of a multipart direct upload: its number
// (1-based) and the ETag the store answered the client's PUT with.
type Part struct {
	Number int
	ETag   string
}

// Presigner lets clients move bytes directly to and from the store,
// bypassing the service. Only the S3 store implements it; callers
// type-assert and fall back to streaming through Put/Get.
type Presigner interface {
	// PresignPut returns a URL a client PUTs the whole object to.
	PresignPut(ctx context.Context, tier Tier, key string, expiry time.Duration) (*url.URL, error)
	// PresignGet returns a URL a client GETs the object from; a non-empty
	// downloadName makes the response an attachment with that file name.
	PresignGet(ctx context.Context, tier Tier, key string, expiry time.Duration, downloadName string) (*url.URL, error)
	// NewMultipart starts a multipart direct upload and returns its ID.
	NewMultipart(ctx context.Context, tier Tier, key, contentType string) (uploadID string, err error)
	// PresignPart returns the URL a client PUTs part number part to.
	PresignPart(ctx context.Context, tier Tier, key, uploadID string, part int, expiry time.Duration) (*url.URL, error)
	// CompleteMultipart joins the parts the client reports (with the ETags
	// it got back) into the object.
	CompleteMultipart(ctx context.Context, tier Tier, key, uploadID string, parts []Part) (Object, error)
	// AbortMultipart drops an upload and its parts; an unknown upload is
	// not an error.
	AbortMultipart(ctx context.Context, tier Tier, key, uploadID string) error
}

// PartSizer tells the size a multipart upload would have once completed
// (the S3 store), so that an upload larger than declared can be refused
// while its parts can still be uploaded again.
type PartSizer interface {
	// PartsSize is the sum of the sizes of the uploaded parts named by
	// parts (number and ETag); an error when one is not there.
	PartsSize(ctx context.Context, tier Tier, key, uploadID string, parts []Part) (int64, error)
}

// Notifier reports objects created in a tier, including ones clients
// uploaded with presigned URLs.
type Notifier interface {
	// ObjectCreated returns once the subscription is live: every object
	// created in tier after it returns is delivered (at least once while
	// the connection holds; see the S3 implementation for reconnects). The
	// channel closes when ctx ends.
	ObjectCreated(ctx context.Context, tier Tier) (<-chan Object, error)
}

// Lifecycle manages a bucket rule that moves processed objects to a
// colder storage class by itself, so the service need not sweep them.
type Lifecycle interface {
	// EnsureColdTransition installs (or updates) a rule moving objects of
	// the processed tier to storageClass days after they were written,
	// keeping any other rule of the bucket.
	EnsureColdTransition(ctx context.Context, days int, storageClass string) error
	// ColdTransition reports the rule EnsureColdTransition installs; ok is
	// false when there is none.
	ColdTransition(ctx context.Context) (days int, storageClass string, ok bool, err error)
}

// Sizes of direct (presigned) uploads.
const (
	// MultipartThreshold: uploads larger than this go in presigned parts;
	// smaller ones in one presigned PUT.
	MultipartThreshold = 16 << 20
	// PartSize is the part size PlanParts starts from.
	PartSize = 16 << 20
	// MinPartSize is S3's minimum for every part but the last.
	MinPartSize = 5 << 20
	// MaxPartSize and MaxParts are S3's limits.
	MaxPartSize = 5 << 30
	MaxParts    = 10000
)

// PlanParts splits a direct upload of size bytes into parts: PartSize
// each (the last one shorter), grown in MiB steps when PartSize would need
// more than MaxParts parts.
func PlanParts(size int64) (partSize int64, count int, err error) {
	if size <= 0 {
		return 0, 0, fmt.Errorf("store: plan parts of %d bytes: size must be positive", size)
	}
	partSize = PartSize
	if size > partSize*MaxParts {
		const mib = 1 << 20
		partSize = ((size+MaxParts-1)/MaxParts + mib - 1) / mib * mib
	}
	if partSize > MaxPartSize {
		return 0, 0, fmt.Errorf("store: plan parts of %d bytes: larger than %d parts of %d bytes", size, MaxParts, int64(MaxPartSize))
	}
	return partSize, int((size + partSize - 1) / partSize), nil
}

// maxKeyLen keeps keys under S3's 1024-byte limit and local path limits
// (each segment under the usual 255-byte file name limit).
const (
	maxKeyLen     = 1024
	maxSegmentLen = 200
)

// ValidKey reports whether key is acceptable to every store: 1 to 1024
// bytes of [A-Za-z0-9._-/], '/'-separated segments that are neither empty
// nor start with '.' (which rules out "..", absolute paths and hidden
// files, and leaves dot names free for a store's own temporary files and
// probes), each at most 200 bytes.
func ValidKey(key string) error {
	if key == "" || len(key) > maxKeyLen {
		return fmt.Errorf("%w: %q: length must be 1..%d", ErrInvalidKey, key, maxKeyLen)
	}
	for _, seg := range strings.Split(key, "/") {
		switch {
		case seg == "":
			return fmt.Errorf("%w: %q: empty path segment (leading, trailing or doubled '/')", ErrInvalidKey, key)
		case seg[0] == '.':
			return fmt.Errorf("%w: %q: a segment starts with '.'", ErrInvalidKey, key)
		case len(seg) > maxSegmentLen:
			return fmt.Errorf("%w: %q: a segment is longer than %d bytes", ErrInvalidKey, key, maxSegmentLen)
		}
		for i := 0; i < len(seg); i++ {
			c := seg[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
				return fmt.Errorf("%w: %q: byte %q is not one of [A-Za-z0-9._-/]", ErrInvalidKey, key, c)
			}
		}
	}
	return nil
}

func checkTierKey(tier Tier, key string) error {
	if !tier.valid() {
		return fmt.Errorf("store: unknown tier %q", tier)
	}
	return ValidKey(key)
}

// checkRange validates Get's offset and length; size < 0 means the size
// is not known yet (only the signs are checked).
func checkRange(offset, length, size int64) error {
	if offset < 0 || length < -1 || size >= 0 && offset > 0 && offset >= size {
		return fmt.Errorf("%w: offset %d, length %d, object size %d", ErrInvalidRange, offset, length, size)
	}
	return nil
}
