// Package store is where media bytes live: a raw, a processed and a cold
// tier, on the local disk or in S3-compatible object storage.
package store

import (
	"context"
	"errors"
	"io"
	"net/url"
	"time"
)

// Tier names one of the three places an object lives.
type Tier string

// The tiers.
const (
	TierRaw       Tier = "raw"
	TierProcessed Tier = "processed"
	TierCold      Tier = "cold"
)

// Object describes a stored object.
type Object struct {
	Key         string
	Size        int64
	ContentType string
	ETag        string
	ModTime     time.Time
}

// ErrNotFound is wrapped by every implementation for a missing key.
var ErrNotFound = errors.New("store: object not found")

// Store keeps objects in tiers.
type Store interface {
	Put(ctx context.Context, tier Tier, key string, r io.Reader, size int64, contentType string) (Object, error)
	Get(ctx context.Context, tier Tier, key string, offset, length int64) (io.ReadCloser, Object, error)
	Stat(ctx context.Context, tier Tier, key string) (Object, error)
	Delete(ctx context.Context, tier Tier, key string) error
	Move(ctx context.Context, from, to Tier, key string) error
	List(ctx context.Context, tier Tier, prefix string, fn func(Object) bool) error
	Close() error
}

// Presigner signs URLs that reach the store directly (S3).
type Presigner interface {
	PresignPut(ctx context.Context, tier Tier, key string, expiry time.Duration) (*url.URL, error)
	PresignGet(ctx context.Context, tier Tier, key string, expiry time.Duration, downloadName string) (*url.URL, error)
	NewMultipart(ctx context.Context, tier Tier, key, contentType string) (uploadID string, err error)
	PresignPart(ctx context.Context, tier Tier, key, uploadID string, part int, expiry time.Duration) (*url.URL, error)
	CompleteMultipart(ctx context.Context, tier Tier, key, uploadID string, parts []Part) (Object, error)
	AbortMultipart(ctx context.Context, tier Tier, key, uploadID string) error
}

// Part is an uploaded part of a multipart upload.
type Part struct {
	Number int
	ETag   string
}

// Notifier tells of objects created in a tier.
type Notifier interface {
	ObjectCreated(ctx context.Context, tier Tier) (<-chan Object, error)
}

// Lifecycle sets the rule moving processed objects to a storage class.
type Lifecycle interface {
	EnsureColdTransition(ctx context.Context, days int, storageClass string) error
	ColdTransition(ctx context.Context) (days int, storageClass string, ok bool, err error)
}
