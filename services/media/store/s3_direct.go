package store

import (
	"context"
	"errors"
	"fmt"
	"mime"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
)

// Direct uploads and downloads: the service signs, the client moves the
// bytes. URLs are signed by the PublicEndpoint client when one is set; no
// signing makes a request (the region is configured).

// maxPresignExpiry is SigV4's limit.
const maxPresignExpiry = 7 * 24 * time.Hour

func checkExpiry(expiry time.Duration) error {
	if expiry < time.Second || expiry > maxPresignExpiry {
		return fmt.Errorf("store: presign expiry %v: want 1s to 7 days", expiry)
	}
	return nil
}

func (s *S3) PresignPut(ctx context.Context, tier Tier, key string, expiry time.Duration) (*url.URL, error) {
	if err := checkTierKey(tier, key); err != nil {
		return nil, err
	}
	if err := checkExpiry(expiry); err != nil {
		return nil, err
	}
	u, err := s.presign.PresignedPutObject(ctx, s.buckets[tier], key, expiry)
	if err != nil {
		return nil, wrapErr("presign put", tier, key, err)
	}
	return u, nil
}

func (s *S3) PresignGet(ctx context.Context, tier Tier, key string, expiry time.Duration, downloadName string) (*url.URL, error) {
	if err := checkTierKey(tier, key); err != nil {
		return nil, err
	}
	if err := checkExpiry(expiry); err != nil {
		return nil, err
	}
	params := url.Values{}
	if downloadName != "" {
		// FormatMediaType quotes the name, or switches to RFC 2231's
		// filename*= for names that are not plain ASCII.
		cd := mime.FormatMediaType("attachment", map[string]string{"filename": downloadName})
		if cd == "" {
			return nil, fmt.Errorf("store: presign get %s %s: unusable download name %q", tier, key, downloadName)
		}
		params.Set("response-content-disposition", cd)
	}
	u, err := s.presign.PresignedGetObject(ctx, s.buckets[tier], key, expiry, params)
	if err != nil {
		return nil, wrapErr("presign get", tier, key, err)
	}
	return u, nil
}

func (s *S3) NewMultipart(ctx context.Context, tier Tier, key, contentType string) (string, error) {
	if err := checkTierKey(tier, key); err != nil {
		return "", err
	}
	if contentType == "" {
		contentType = defaultCType
	}
	opts := minio.PutObjectOptions{ContentType: contentType}
	s.coldClass(tier, &opts)
	id, err := s.core.NewMultipartUpload(ctx, s.buckets[tier], key, opts)
	if err != nil {
		return "", wrapErr("new multipart", tier, key, err)
	}
	return id, nil
}

func (s *S3) PresignPart(ctx context.Context, tier Tier, key, uploadID string, part int, expiry time.Duration) (*url.URL, error) {
	if err := checkTierKey(tier, key); err != nil {
		return nil, err
	}
	if err := checkExpiry(expiry); err != nil {
		return nil, err
	}
	if uploadID == "" || part < 1 || part > MaxParts {
		return nil, fmt.Errorf("store: presign part %d of %s %s: want an upload ID and a part number 1..%d", part, tier, key, MaxParts)
	}
	params := url.Values{"partNumber": {strconv.Itoa(part)}, "uploadId": {uploadID}}
	u, err := s.presign.Presign(ctx, "PUT", s.buckets[tier], key, expiry, params)
	if err != nil {
		return nil, wrapErr("presign part", tier, key, err)
	}
	return u, nil
}

// CompleteMultipart sorts the parts by number (S3 insists on ascending
// order; clients upload in parallel and report in any order).
func (s *S3) CompleteMultipart(ctx context.Context, tier Tier, key, uploadID string, parts []Part) (Object, error) {
	if err := checkTierKey(tier, key); err != nil {
		return Object{}, err
	}
	if uploadID == "" || len(parts) == 0 || len(parts) > MaxParts {
		return Object{}, fmt.Errorf("store: complete multipart %s %s: want an upload ID and 1..%d parts", tier, key, MaxParts)
	}
	cp := make([]minio.CompletePart, len(parts))
	for i, p := range parts {
		if p.Number < 1 || p.Number > MaxParts || p.ETag == "" {
			return Object{}, fmt.Errorf("store: complete multipart %s %s: part %d: bad number or empty ETag", tier, key, p.Number)
		}
		cp[i] = minio.CompletePart{PartNumber: p.Number, ETag: p.ETag}
	}
	sort.Slice(cp, func(i, j int) bool { return cp[i].PartNumber < cp[j].PartNumber })
	for i := 1; i < len(cp); i++ {
		if cp[i].PartNumber == cp[i-1].PartNumber {
			return Object{}, fmt.Errorf("store: complete multipart %s %s: part %d reported twice", tier, key, cp[i].PartNumber)
		}
	}
	if _, err := s.core.CompleteMultipartUpload(ctx, s.buckets[tier], key, uploadID, cp, minio.PutObjectOptions{}); err != nil {
		return Object{}, wrapErr("complete multipart", tier, key, err)
	}
	return s.Stat(ctx, tier, key)
}

// PartsSize is the size of the object completing the multipart upload
// with parts would make: the sum of the sizes of the uploaded parts they
// name (by number, with a matching ETag), read from the store's list of
// the upload's parts without completing it. A part named that is not
// there (or not with that ETag) is an error, as completing would be.
func (s *S3) PartsSize(ctx context.Context, tier Tier, key, uploadID string, parts []Part) (int64, error) {
	if err := checkTierKey(tier, key); err != nil {
		return 0, err
	}
	if uploadID == "" || len(parts) == 0 || len(parts) > MaxParts {
		return 0, fmt.Errorf("store: parts of %s %s: want an upload ID and 1..%d parts", tier, key, MaxParts)
	}
	uploaded := map[int]minio.ObjectPart{}
	for marker := 0; ; {
		res, err := s.core.ListObjectParts(ctx, s.buckets[tier], key, uploadID, marker, 1000)
		if err != nil {
			return 0, wrapErr("list parts", tier, key, err)
		}
		for _, p := range res.ObjectParts {
			uploaded[p.PartNumber] = p
		}
		if !res.IsTruncated || res.NextPartNumberMarker <= marker {
			break
		}
		marker = res.NextPartNumberMarker
	}
	unquote := func(e string) string { return strings.Trim(e, `"`) }
	var size int64
	named := map[int]bool{}
	for _, p := range parts {
		if named[p.Number] {
			return 0, fmt.Errorf("store: parts of %s %s: part %d named twice", tier, key, p.Number)
		}
		named[p.Number] = true
		up, ok := uploaded[p.Number]
		if !ok || unquote(up.ETag) != unquote(p.ETag) {
			return 0, fmt.Errorf("store: parts of %s %s: part %d with ETag %s was not uploaded", tier, key, p.Number, p.ETag)
		}
		size += up.Size
	}
	return size, nil
}

func (s *S3) AbortMultipart(ctx context.Context, tier Tier, key, uploadID string) error {
	if err := checkTierKey(tier, key); err != nil {
		return err
	}
	if uploadID == "" {
		return errors.New("store: abort multipart: empty upload ID")
	}
	err := s.core.AbortMultipartUpload(ctx, s.buckets[tier], key, uploadID)
	if err != nil && !errors.Is(wrapErr("", tier, key, err), ErrNotFound) {
		return wrapErr("abort multipart", tier, key, err)
	}
	return nil
}
