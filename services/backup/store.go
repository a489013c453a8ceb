package backup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// Store is where backups live: a local directory or an S3 bucket/prefix.
// Names are slash-separated and relative to the store's root; a backup
// is the names under "{id}/".
type Store interface {
	// Put stores exactly size bytes of r under name, replacing what was
	// there; a reader that ends early or runs long fails the Put, and a
	// failed Put leaves nothing under name.
	Put(ctx context.Context, name string, r io.Reader, size int64) error
	// Open reads name; a missing name is ErrNotFound.
	Open(ctx context.Context, name string) (io.ReadCloser, error)
	// IDs lists the backups (the first path elements), complete or not.
	IDs(ctx context.Context) ([]string, error)
	// Delete removes a backup (everything under "{id}/").
	Delete(ctx context.Context, id string) error
	// String names the store for messages.
	String() string
}

// S3Config configures the S3 client of s3:// stores: the same settings
// as the media store's (--s3-endpoint, --s3-region, --s3-access-key,
// --s3-secret-key). Empty keys mean the environment's AWS credentials.
type S3Config struct {
	Endpoint             string // host:port or http(s)://host:port
	Region               string // default us-east-1
	AccessKey, SecretKey string
	Transport            http.RoundTripper // tests
}

// OpenStore opens "DIR" (a local directory, created when missing) or
// "s3://bucket[/prefix]" (the bucket is created when missing).
func OpenStore(ctx context.Context, where string, s3 S3Config) (Store, error) {
	if where == "" {
		return nil, errors.New("backup: no store given (want DIR or s3://bucket/prefix)")
	}
	if rest, ok := strings.CutPrefix(where, "s3://"); ok {
		bucket, prefix, _ := strings.Cut(rest, "/")
		return NewS3Store(ctx, s3, bucket, prefix)
	}
	if strings.Contains(where, "://") {
		return nil, fmt.Errorf("backup: store %q: want a directory or s3://bucket/prefix", where)
	}
	return NewDirStore(where)
}

// OpenStoreToRead opens a store that restore reads: as OpenStore, but a
// missing directory or bucket is ErrNotFound and nothing is created (a
// mistyped bucket would be left behind, and read-only credentials may
// not create one).
func OpenStoreToRead(ctx context.Context, where string, s3 S3Config) (Store, error) {
	if rest, ok := strings.CutPrefix(where, "s3://"); ok {
		bucket, prefix, _ := strings.Cut(rest, "/")
		return newS3Store(ctx, s3, bucket, prefix, false)
	}
	if where == "" || strings.Contains(where, "://") {
		return OpenStore(ctx, where, s3)
	}
	if fi, err := os.Stat(where); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("%w: no directory %s", ErrNotFound, where)
	}
	return &DirStore{root: where}, nil
}

// DirStore keeps backups in a local directory: {root}/{id}/{name}.
type DirStore struct{ root string }

// NewDirStore opens (and creates) root.
func NewDirStore(root string) (*DirStore, error) {
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, fmt.Errorf("backup: store %s: %w", root, err)
	}
	return &DirStore{root: root}, nil
}

func (d *DirStore) String() string { return d.root }

func (d *DirStore) path(name string) (string, error) {
	if err := ValidKey(name); err != nil {
		return "", fmt.Errorf("backup: %w", err)
	}
	return filepath.Join(d.root, filepath.FromSlash(name)), nil
}

// Put writes to name.part, syncs it and renames it into place.
func (d *DirStore) Put(ctx context.Context, name string, r io.Reader, size int64) (err error) {
	p, err := d.path(name)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	tmp := p + ".part"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	n, err := io.Copy(f, ctxReader{ctx, io.LimitReader(r, size+1)})
	if err != nil {
		return fmt.Errorf("backup: writing %s: %w", p, err)
	}
	if n != size {
		return fmt.Errorf("backup: writing %s: got %d bytes, want %d", p, n, size)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("backup: writing %s: %w", p, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("backup: writing %s: %w", p, err)
	}
	if err := os.Rename(tmp, p); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	return syncDir(filepath.Dir(p))
}

func (d *DirStore) Open(ctx context.Context, name string) (io.ReadCloser, error) {
	p, err := d.path(name)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, p)
	}
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	return f, nil
}

func (d *DirStore) IDs(ctx context.Context) ([]string, error) {
	ents, err := os.ReadDir(d.root)
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	var ids []string
	for _, e := range ents {
		if e.IsDir() && ValidID(e.Name()) == nil {
			ids = append(ids, e.Name())
		}
	}
	return ids, nil
}

func (d *DirStore) Delete(ctx context.Context, id string) error {
	if err := ValidID(id); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	if err := os.RemoveAll(filepath.Join(d.root, id)); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	return nil
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("backup: sync %s: %w", dir, err)
	}
	return nil
}

// ctxReader stops a copy when ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// S3Store keeps backups in a bucket under a prefix:
// {prefix}/{id}/{name}.
type S3Store struct {
	client *minio.Client
	bucket string
	prefix string // "" or ending in "/"
}

// NewS3Store connects and creates the bucket when missing.
func NewS3Store(ctx context.Context, cfg S3Config, bucket, prefix string) (*S3Store, error) {
	return newS3Store(ctx, cfg, bucket, prefix, true)
}

// newS3Store connects; a missing bucket is created, or with !create
// ErrNotFound.
func newS3Store(ctx context.Context, cfg S3Config, bucket, prefix string, create bool) (*S3Store, error) {
	if bucket == "" {
		return nil, errors.New("backup: s3 store: no bucket (want s3://bucket/prefix)")
	}
	prefix = strings.Trim(prefix, "/")
	if prefix != "" {
		if err := ValidKey(prefix); err != nil {
			return nil, fmt.Errorf("backup: s3 prefix: %w", err)
		}
		prefix += "/"
	}
	if cfg.Endpoint == "" {
		return nil, errors.New("backup: an s3:// store needs an S3 endpoint (--s3-endpoint)")
	}
	host, secure := cfg.Endpoint, false
	if strings.Contains(cfg.Endpoint, "://") {
		u, err := url.Parse(cfg.Endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("backup: s3 endpoint %q: want host:port or http(s)://host:port", cfg.Endpoint)
		}
		host, secure = u.Host, u.Scheme == "https"
	}
	var creds *credentials.Credentials
	switch {
	case cfg.AccessKey != "" && cfg.SecretKey != "":
		creds = credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, "")
	case cfg.AccessKey != "" || cfg.SecretKey != "":
		return nil, errors.New("backup: s3: set both the access key and the secret key, or neither")
	default:
		creds = credentials.NewChainCredentials([]credentials.Provider{
			&credentials.EnvAWS{}, &credentials.EnvMinio{}, &credentials.FileAWSCredentials{}, &credentials.IAM{}})
	}
	region := cfg.Region
	if region == "" {
		region = "us-east-1"
	}
	c, err := minio.New(host, &minio.Options{Creds: creds, Secure: secure, Region: region, Transport: cfg.Transport})
	if err != nil {
		return nil, fmt.Errorf("backup: s3 client: %w", err)
	}
	ok, err := c.BucketExists(ctx, bucket)
	if err != nil {
		return nil, fmt.Errorf("backup: s3 bucket %s: %w", bucket, err)
	}
	if !ok && !create {
		return nil, fmt.Errorf("%w: no bucket %s at %s", ErrNotFound, bucket, cfg.Endpoint)
	}
	if !ok {
		if err := c.MakeBucket(ctx, bucket, minio.MakeBucketOptions{Region: region}); err != nil {
			if code := minio.ToErrorResponse(err).Code; code != "BucketAlreadyOwnedByYou" {
				return nil, fmt.Errorf("backup: s3 create bucket %s: %w", bucket, err)
			}
		}
	}
	return &S3Store{client: c, bucket: bucket, prefix: prefix}, nil
}

func (s *S3Store) String() string { return "s3://" + s.bucket + "/" + s.prefix }

func (s *S3Store) key(name string) (string, error) {
	if err := ValidKey(name); err != nil {
		return "", fmt.Errorf("backup: %w", err)
	}
	return s.prefix + name, nil
}

// Put uploads in one PUT up to 5 GiB (streamed, not buffered), in 128 MiB
// parts above.
func (s *S3Store) Put(ctx context.Context, name string, r io.Reader, size int64) error {
	key, err := s.key(name)
	if err != nil {
		return err
	}
	opts := minio.PutObjectOptions{ContentType: "application/octet-stream", NumThreads: 1, PartSize: 5 << 30}
	if size > 5<<30 {
		opts.PartSize = 128 << 20
	}
	er := &exactReader{r: r, left: size}
	if _, err := s.client.PutObject(ctx, s.bucket, key, er, size, opts); err != nil {
		return fmt.Errorf("backup: s3 put %s: %w", key, err)
	}
	if er.left != 0 || er.err != nil {
		_ = s.client.RemoveObject(ctx, s.bucket, key, minio.RemoveObjectOptions{})
		return fmt.Errorf("backup: s3 put %s: source ended %d bytes early: %v", key, er.left, er.err)
	}
	return nil
}

// exactReader passes exactly left bytes of r and reports a short source
// (minio-go would otherwise send what it got).
type exactReader struct {
	r    io.Reader
	left int64
	err  error
}

func (e *exactReader) Read(p []byte) (int, error) {
	if e.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > e.left {
		p = p[:e.left]
	}
	n, err := e.r.Read(p)
	e.left -= int64(n)
	if err == io.EOF && e.left > 0 {
		e.err = io.ErrUnexpectedEOF
		return n, e.err
	}
	if err != nil && err != io.EOF {
		e.err = err
	}
	return n, err
}

func (s *S3Store) Open(ctx context.Context, name string) (io.ReadCloser, error) {
	key, err := s.key(name)
	if err != nil {
		return nil, err
	}
	body, _, _, err := minio.Core{Client: s.client}.GetObject(ctx, s.bucket, key, minio.GetObjectOptions{})
	if err != nil {
		if resp := minio.ToErrorResponse(err); resp.Code == "NoSuchKey" || resp.StatusCode == http.StatusNotFound {
			return nil, fmt.Errorf("%w: %s%s", ErrNotFound, s, name)
		}
		return nil, fmt.Errorf("backup: s3 get %s: %w", key, err)
	}
	return body, nil
}

func (s *S3Store) IDs(ctx context.Context) ([]string, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var ids []string
	for info := range s.client.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: s.prefix}) {
		if info.Err != nil {
			return nil, fmt.Errorf("backup: s3 list %s: %w", s, info.Err)
		}
		id, ok := strings.CutSuffix(strings.TrimPrefix(info.Key, s.prefix), "/")
		if ok && ValidID(id) == nil {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

func (s *S3Store) Delete(ctx context.Context, id string) error {
	if err := ValidID(id); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	objs := make(chan minio.ObjectInfo)
	go func() {
		defer close(objs)
		for info := range s.client.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: s.prefix + id + "/", Recursive: true}) {
			if info.Err != nil {
				return
			}
			select {
			case objs <- info:
			case <-ctx.Done():
				return
			}
		}
	}()
	for e := range s.client.RemoveObjects(ctx, s.bucket, objs, minio.RemoveObjectsOptions{}) {
		if e.Err != nil {
			return fmt.Errorf("backup: s3 delete %s: %w", e.ObjectName, e.Err)
		}
	}
	return nil
}

// sortedIDs returns ids sorted oldest first (IDs start with their UTC
// creation time).
func sortedIDs(ids []string) []string {
	ids = slices.Clone(ids)
	slices.Sort(ids)
	return ids
}

// CopyFile hard-links from to to (a copy when the file system has no
// links): both names then stand alone, and deleting one keeps the other.
func (d *DirStore) CopyFile(ctx context.Context, from, to string) error {
	src, err := d.path(from)
	if err != nil {
		return err
	}
	dst, err := d.path(to)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	if err := os.Link(src, dst); err == nil {
		return syncDir(filepath.Dir(dst))
	}
	f, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	return d.Put(ctx, to, f, fi.Size())
}

// CopyFile copies server-side.
func (s *S3Store) CopyFile(ctx context.Context, from, to string) error {
	src, err := s.key(from)
	if err != nil {
		return err
	}
	dst, err := s.key(to)
	if err != nil {
		return err
	}
	_, err = s.client.CopyObject(ctx, minio.CopyDestOptions{Bucket: s.bucket, Object: dst},
		minio.CopySrcOptions{Bucket: s.bucket, Object: src})
	if err != nil {
		return fmt.Errorf("backup: s3 copy %s: %w", src, err)
	}
	return nil
}
