package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// S3Config configures the S3 store (AWS S3, MinIO or anything speaking
// the S3 API).
type S3Config struct {
	// Endpoint is host:port, or a URL whose scheme (http, https) decides
	// Secure.
	Endpoint string
	Secure   bool
	// Region defaults to us-east-1 (MinIO's). It is always set on the
	// client so that no request ever asks the server for a bucket's
	// location, which the presigning client could not do against a
	// PublicEndpoint the service cannot reach.
	Region string
	// AccessKey and SecretKey; both empty means the environment's AWS
	// credentials: AWS_* variables, MINIO_* variables, the shared
	// credentials file, then the instance's IAM role.
	AccessKey, SecretKey string
	// The buckets of the tiers; they are created when missing and must
	// differ, since keys are the same in every tier.
	RawBucket, ProcessedBucket string
	// ColdBucket holds the cold tier; objects moved or written there get
	// ColdStorageClass when that is set too. With ColdBucket empty,
	// ColdStorageClass is required and the cold tier is an alias of the
	// processed tier (same bucket, same objects): objects go cold in place
	// through the lifecycle rule (see Lifecycle) and stay readable under
	// TierProcessed; Move between the two rewrites the storage class.
	ColdBucket       string
	ColdStorageClass string
	// ArchiveBucket holds the archive's sealed segments (TierArchive);
	// empty: the store has no archive tier.
	ArchiveBucket string
	// PublicEndpoint (host:port or URL), when set, is the host presigned
	// URLs are signed for: a CDN, or the name clients reach the store by
	// when it differs from the service's.
	PublicEndpoint string
	// Transport replaces minio-go's default transport (tests).
	Transport http.RoundTripper
}

// S3 is the store on S3 buckets, one per tier. It implements Presigner,
// Notifier (on MinIO) and Lifecycle besides Store.
type S3 struct {
	cfg     S3Config
	client  *minio.Client
	core    minio.Core
	presign *minio.Client // signs for PublicEndpoint; client when unset
	buckets map[Tier]string
}

var (
	_ Store     = (*S3)(nil)
	_ Presigner = (*S3)(nil)
	_ Notifier  = (*S3)(nil)
	_ Lifecycle = (*S3)(nil)
)

const defaultRegion = "us-east-1"

// parseEndpoint accepts host:port or a URL and returns minio-go's
// host:port and whether to use TLS.
func parseEndpoint(ep string, secure bool) (string, bool, error) {
	if !strings.Contains(ep, "://") {
		if ep == "" || strings.ContainsAny(ep, "/?#") {
			return "", false, fmt.Errorf("store: s3 endpoint %q: want host:port or a URL", ep)
		}
		return ep, secure, nil
	}
	u, err := url.Parse(ep)
	if err != nil {
		return "", false, fmt.Errorf("store: s3 endpoint %q: %w", ep, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
		return "", false, fmt.Errorf("store: s3 endpoint %q: want http(s)://host[:port] without a path", ep)
	}
	return u.Host, u.Scheme == "https", nil
}

func (cfg S3Config) credentials() (*credentials.Credentials, error) {
	switch {
	case cfg.AccessKey != "" && cfg.SecretKey != "":
		return credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, ""), nil
	case cfg.AccessKey != "" || cfg.SecretKey != "":
		return nil, errors.New("store: s3: set both the access key and the secret key, or neither")
	}
	return credentials.NewChainCredentials([]credentials.Provider{
		&credentials.EnvAWS{},
		&credentials.EnvMinio{},
		&credentials.FileAWSCredentials{},
		&credentials.IAM{},
	}), nil
}

func (cfg S3Config) newClient(endpoint string, creds *credentials.Credentials) (*minio.Client, error) {
	host, secure, err := parseEndpoint(endpoint, cfg.Secure)
	if err != nil {
		return nil, err
	}
	c, err := minio.New(host, &minio.Options{
		Creds:     creds,
		Secure:    secure,
		Region:    cfg.Region,
		Transport: cfg.Transport,
	})
	if err != nil {
		return nil, fmt.Errorf("store: s3 client for %s: %w", endpoint, err)
	}
	return c, nil
}

// NewS3 connects to the store and creates the tiers' buckets when
// missing.
func NewS3(ctx context.Context, cfg S3Config) (*S3, error) {
	if cfg.Region == "" {
		cfg.Region = defaultRegion
	}
	if cfg.RawBucket == "" || cfg.ProcessedBucket == "" {
		return nil, errors.New("store: s3: the raw and processed buckets are required")
	}
	if cfg.ColdBucket == "" && cfg.ColdStorageClass == "" {
		return nil, errors.New("store: s3: set a cold bucket or a cold storage class")
	}
	buckets := map[Tier]string{TierRaw: cfg.RawBucket, TierProcessed: cfg.ProcessedBucket, TierCold: cfg.ColdBucket}
	if cfg.ColdBucket == "" {
		buckets[TierCold] = cfg.ProcessedBucket
	}
	if cfg.RawBucket == cfg.ProcessedBucket || cfg.ColdBucket != "" && (cfg.ColdBucket == cfg.RawBucket || cfg.ColdBucket == cfg.ProcessedBucket) {
		return nil, errors.New("store: s3: the raw, processed and cold buckets must differ")
	}
	if a := cfg.ArchiveBucket; a != "" {
		if a == cfg.RawBucket || a == cfg.ProcessedBucket || a == buckets[TierCold] {
			return nil, errors.New("store: s3: the archive bucket must differ from the media buckets")
		}
		buckets[TierArchive] = a
	}
	creds, err := cfg.credentials()
	if err != nil {
		return nil, err
	}
	if cfg.Transport == nil {
		// Our own, so that Close can drop its idle connections.
		_, secure, err := parseEndpoint(cfg.Endpoint, cfg.Secure)
		if err != nil {
			return nil, err
		}
		if cfg.Transport, err = minio.DefaultTransport(secure); err != nil {
			return nil, fmt.Errorf("store: s3 transport: %w", err)
		}
	}
	client, err := cfg.newClient(cfg.Endpoint, creds)
	if err != nil {
		return nil, err
	}
	s := &S3{cfg: cfg, client: client, core: minio.Core{Client: client}, presign: client, buckets: buckets}
	if cfg.PublicEndpoint != "" {
		if s.presign, err = cfg.newClient(cfg.PublicEndpoint, creds); err != nil {
			return nil, err
		}
	}
	for _, t := range []Tier{TierRaw, TierProcessed, TierCold, TierArchive} {
		if t == TierCold && cfg.ColdBucket == "" || t == TierArchive && cfg.ArchiveBucket == "" {
			continue
		}
		if err := s.ensureBucket(ctx, buckets[t]); err != nil {
			return nil, err
		}
	}
	return s, nil
}

func (s *S3) ensureBucket(ctx context.Context, bucket string) error {
	ok, err := s.client.BucketExists(ctx, bucket)
	if err != nil {
		return fmt.Errorf("store: s3: bucket %s: %w", bucket, err)
	}
	if ok {
		return nil
	}
	err = s.client.MakeBucket(ctx, bucket, minio.MakeBucketOptions{Region: s.cfg.Region})
	if code := minio.ToErrorResponse(err).Code; code == "BucketAlreadyOwnedByYou" || code == "BucketAlreadyExists" {
		// Another node created it between the two calls.
		ok, err = s.client.BucketExists(ctx, bucket)
		if err == nil && !ok {
			err = fmt.Errorf("%s is taken by another account", bucket)
		}
	}
	if err != nil {
		return fmt.Errorf("store: s3: create bucket %s: %w", bucket, err)
	}
	return nil
}

// Bucket returns the bucket of tier.
func (s *S3) Bucket(tier Tier) string { return s.buckets[tier] }

// Client returns the underlying minio-go client (tests, admin tools).
func (s *S3) Client() *minio.Client { return s.client }

// wrapErr maps S3 error codes onto the package's errors.
func wrapErr(op string, tier Tier, key string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("store: s3 %s %s %s: %w", op, tier, key, err)
	}
	resp := minio.ToErrorResponse(err)
	switch {
	case resp.Code == "NoSuchKey" || resp.Code == "NoSuchUpload" ||
		resp.StatusCode == http.StatusNotFound && resp.Code != "NoSuchBucket":
		return fmt.Errorf("%w: s3 %s %s %s: %w", ErrNotFound, op, tier, key, err)
	case resp.Code == "InvalidRange" || resp.StatusCode == http.StatusRequestedRangeNotSatisfiable:
		return fmt.Errorf("%w: s3 %s %s %s: %w", ErrInvalidRange, op, tier, key, err)
	case resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusRequestTimeout:
		return fmt.Errorf("%w: s3 %s %s %s (%d %s): %w", ErrUnavailable, op, tier, key, resp.StatusCode, resp.Code, err)
	}
	return fmt.Errorf("store: s3 %s %s %s: %w", op, tier, key, err)
}

// exactReader delivers exactly n bytes of r: a short reader is
// io.ErrUnexpectedEOF, and a longer one fails before its last bytes go
// out, so that the upload carrying them fails instead of storing a cut.
type exactReader struct {
	r    io.Reader
	left int64
}

var errTooLong = errors.New("store: the reader gave more bytes than announced")

func (e *exactReader) Read(p []byte) (int, error) {
	if e.left == 0 {
		if extraByte(e.r) {
			return 0, errTooLong
		}
		return 0, io.EOF
	}
	if int64(len(p)) > e.left {
		p = p[:e.left]
	}
	n, err := e.r.Read(p)
	e.left -= int64(n)
	if err == io.EOF {
		if e.left > 0 {
			return n, io.ErrUnexpectedEOF
		}
		err = nil
	}
	if e.left == 0 && err == nil && extraByte(e.r) {
		return 0, errTooLong
	}
	return n, err
}

// extraByte reports whether r has another byte.
func extraByte(r io.Reader) bool {
	var b [1]byte
	for range 100 {
		n, err := r.Read(b[:])
		if n > 0 {
			return true
		}
		if err != nil {
			return false
		}
	}
	return false
}

// Put picks minio-go's upload so that memory stays bounded: a known size
// up to 5 GiB goes out as one streamed PUT (minio-go holds no part
// buffer); larger known sizes and unknown sizes go multipart, holding one
// part in memory (MinPartSize for unknown sizes, which caps them at
// 10,000 × 5 MiB ≈ 48.8 GiB; PlanParts' size beyond 5 GiB).
func (s *S3) Put(ctx context.Context, tier Tier, key string, r io.Reader, size int64, contentType string) (Object, error) {
	if err := checkTierKey(tier, key); err != nil {
		return Object{}, err
	}
	if size < -1 {
		return Object{}, fmt.Errorf("store: s3 put %s %s: negative size %d", tier, key, size)
	}
	if contentType == "" {
		contentType = defaultCType
	}
	opts := minio.PutObjectOptions{ContentType: contentType, NumThreads: 1}
	s.coldClass(tier, &opts)
	switch {
	case size < 0:
		opts.PartSize = MinPartSize
	case size <= MaxPartSize:
		opts.PartSize = MaxPartSize
		r = &exactReader{r: r, left: size}
	default:
		ps, _, err := PlanParts(size)
		if err != nil {
			return Object{}, err
		}
		opts.PartSize = uint64(ps)
		r = &exactReader{r: r, left: size}
	}
	if _, err := s.client.PutObject(ctx, s.buckets[tier], key, r, size, opts); err != nil {
		return Object{}, wrapErr("put", tier, key, err)
	}
	// A PUT's answer carries no modification time (nor, for multipart,
	// the size): one HEAD gives the same Object as Stat will.
	obj, err := s.Stat(ctx, tier, key)
	if err != nil {
		return Object{}, fmt.Errorf("store: s3 put %s %s: stored, but: %w", tier, key, err)
	}
	return obj, nil
}

// coldClass sets the cold storage class on writes to the cold tier.
func (s *S3) coldClass(tier Tier, opts *minio.PutObjectOptions) {
	if tier == TierCold && s.cfg.ColdStorageClass != "" {
		opts.StorageClass = s.cfg.ColdStorageClass
	}
}

func toObject(key string, info minio.ObjectInfo) Object {
	return Object{Key: key, Size: info.Size, ContentType: info.ContentType, ETag: info.ETag, ModTime: info.LastModified}
}

// Get asks for the range in one GET; the whole object's size comes from
// the Content-Range header of a ranged answer.
func (s *S3) Get(ctx context.Context, tier Tier, key string, offset, length int64) (io.ReadCloser, Object, error) {
	if err := checkTierKey(tier, key); err != nil {
		return nil, Object{}, err
	}
	if err := checkRange(offset, length, -1); err != nil {
		return nil, Object{}, err
	}
	if length == 0 {
		obj, err := s.Stat(ctx, tier, key)
		if err == nil {
			err = checkRange(offset, length, obj.Size)
		}
		if err != nil {
			return nil, Object{}, err
		}
		return io.NopCloser(strings.NewReader("")), obj, nil
	}
	var opts minio.GetObjectOptions
	switch {
	case length > 0:
		opts.SetRange(offset, offset+length-1)
	case offset > 0:
		opts.SetRange(offset, 0)
	}
	body, info, hdr, err := s.core.GetObject(ctx, s.buckets[tier], key, opts)
	if err != nil {
		err = wrapErr("get", tier, key, err)
		if offset == 0 && errors.Is(err, ErrInvalidRange) {
			// S3 refuses any range of an empty object, which is not an
			// error here: answer with the empty object.
			if obj, serr := s.Stat(ctx, tier, key); serr == nil && obj.Size == 0 {
				return io.NopCloser(strings.NewReader("")), obj, nil
			}
		}
		return nil, Object{}, err
	}
	obj := toObject(key, info)
	if cr := hdr.Get("Content-Range"); cr != "" {
		if i := strings.LastIndexByte(cr, '/'); i >= 0 {
			if total, perr := strconv.ParseInt(cr[i+1:], 10, 64); perr == nil {
				obj.Size = total
			}
		}
	}
	return body, obj, nil
}

func (s *S3) Stat(ctx context.Context, tier Tier, key string) (Object, error) {
	if err := checkTierKey(tier, key); err != nil {
		return Object{}, err
	}
	info, err := s.client.StatObject(ctx, s.buckets[tier], key, minio.StatObjectOptions{})
	if err != nil {
		return Object{}, wrapErr("stat", tier, key, err)
	}
	return toObject(key, info), nil
}

func (s *S3) Delete(ctx context.Context, tier Tier, key string) error {
	if err := checkTierKey(tier, key); err != nil {
		return err
	}
	err := s.client.RemoveObject(ctx, s.buckets[tier], key, minio.RemoveObjectOptions{})
	if err != nil && !errors.Is(wrapErr("delete", tier, key, err), ErrNotFound) {
		return wrapErr("delete", tier, key, err)
	}
	return nil
}

// sameObject reports whether two tiers share a bucket (the cold tier
// without a cold bucket).
func (s *S3) sameObject(a, b Tier) bool { return s.buckets[a] == s.buckets[b] }

// maxCopySize is the largest object one server-side CopyObject copies;
// larger ones are copied part by part (ComposeObject).
const maxCopySize = 5 << 30

// Move copies server-side, checks the copy's size and only then deletes
// the source, so a failure leaves the object in one tier or both, never
// in neither. The copy gets a new modification time. Between tiers that
// share the processed bucket it rewrites the object in place with the
// other storage class instead.
func (s *S3) Move(ctx context.Context, from, to Tier, key string) error {
	if err := checkTierKey(from, key); err != nil {
		return err
	}
	if err := checkTierKey(to, key); err != nil {
		return err
	}
	src, err := s.Stat(ctx, from, key)
	if err != nil {
		return err
	}
	if from == to {
		return nil
	}
	meta := map[string]string{}
	switch {
	case to == TierCold && s.cfg.ColdStorageClass != "":
		meta["X-Amz-Storage-Class"] = s.cfg.ColdStorageClass
	case s.sameObject(from, to):
		meta["X-Amz-Storage-Class"] = "STANDARD"
	}
	srcBucket, dstBucket := s.buckets[from], s.buckets[to]
	if src.Size <= maxCopySize {
		_, err = s.core.CopyObject(ctx, srcBucket, key, dstBucket, key, meta, minio.CopySrcOptions{}, minio.PutObjectOptions{})
	} else {
		// Storage classes are not carried through a multipart copy;
		// the lifecycle rule (or the bucket's default) applies.
		_, err = s.client.ComposeObject(ctx, minio.CopyDestOptions{Bucket: dstBucket, Object: key},
			minio.CopySrcOptions{Bucket: srcBucket, Object: key})
	}
	if err != nil {
		return wrapErr("move to "+string(to), from, key, err)
	}
	if s.sameObject(from, to) {
		return nil
	}
	dst, err := s.Stat(ctx, to, key)
	if err != nil {
		return fmt.Errorf("store: s3 move %s %s to %s: check the copy: %w", from, key, to, err)
	}
	if dst.Size != src.Size {
		return fmt.Errorf("store: s3 move %s %s to %s: the copy has %d bytes, the source %d", from, key, to, dst.Size, src.Size)
	}
	if err := s.client.RemoveObject(ctx, srcBucket, key, minio.RemoveObjectOptions{}); err != nil {
		return wrapErr("move: delete the source of", from, key, err)
	}
	return nil
}

// List skips keys ValidKey refuses (foreign objects, and the probes of
// ObjectCreated): no other call could read them. S3 listings carry no
// content type, so Object.ContentType is empty here; Stat has it.
func (s *S3) List(ctx context.Context, tier Tier, prefix string, fn func(Object) bool) error {
	if !tier.valid() {
		return fmt.Errorf("store: unknown tier %q", tier)
	}
	if err := validPrefix(prefix); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx) // ends the lister goroutine on an early stop
	defer cancel()
	for info := range s.client.ListObjects(ctx, s.buckets[tier], minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if info.Err != nil {
			return wrapErr("list", tier, prefix, info.Err)
		}
		if ValidKey(info.Key) != nil {
			continue
		}
		if !fn(toObject(info.Key, info)) {
			return nil
		}
	}
	return ctx.Err()
}

// Close releases the idle connections of the store's transport; calls
// in flight finish.
func (s *S3) Close() error {
	if t, ok := s.cfg.Transport.(interface{ CloseIdleConnections() }); ok {
		t.CloseIdleConnections()
	}
	return nil
}
