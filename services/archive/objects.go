package archive

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/edgechat/edgechat/services/media/store"
)

// objectSegments keeps segments in the archive tier of an object store
// (services/media/store): the S3 bucket --s3-archive-bucket, or
// {data}/archive on the local store.
type objectSegments struct {
	st     store.Store
	shared bool
}

var _ SegmentStore = objectSegments{}

// NewObjectSegments keeps segments in st's archive tier; shared tells
// whether every node reaches the same store (S3) or each has its own (a
// local directory).
func NewObjectSegments(st store.Store, shared bool) SegmentStore {
	return objectSegments{st: st, shared: shared}
}

const segmentContentType = "application/vnd.edgechat.segment"

func (o objectSegments) Put(ctx context.Context, key string, data []byte) error {
	_, err := o.st.Put(ctx, store.TierArchive, key, bytes.NewReader(data), int64(len(data)), segmentContentType)
	return err
}

func (o objectSegments) Get(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	rc, _, err := o.st.Get(ctx, store.TierArchive, key, offset, length)
	return rc, missing(err)
}

func (o objectSegments) Size(ctx context.Context, key string) (int64, error) {
	obj, err := o.st.Stat(ctx, store.TierArchive, key)
	return obj.Size, missing(err)
}

func (o objectSegments) Delete(ctx context.Context, key string) error {
	return o.st.Delete(ctx, store.TierArchive, key)
}

func (o objectSegments) List(ctx context.Context, prefix string, fn func(string, int64, time.Time) bool) error {
	return o.st.List(ctx, store.TierArchive, prefix, func(obj store.Object) bool { return fn(obj.Key, obj.Size, obj.ModTime) })
}

func (o objectSegments) Shared() bool { return o.shared }

func missing(err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("%w: %w", ErrSegmentMissing, err)
	}
	return err
}
