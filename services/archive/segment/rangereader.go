package segment

import (
	"context"
	"fmt"
	"io"
)

// RangeGetter reads [offset, offset+length) of one object: an object
// store's ranged GET (services/media/store's Get has this shape once the
// tier and key are bound).
type RangeGetter func(ctx context.Context, offset, length int64) (io.ReadCloser, error)

// RangeReader adapts a RangeGetter to the io.ReaderAt that Open and
// ReadBlock take, so a segment on object storage is read with one ranged
// request for the trailer, one for the index and one per block.
type RangeReader struct {
	ctx context.Context
	get RangeGetter
}

// NewRangeReader reads through get, each request bounded by ctx.
func NewRangeReader(ctx context.Context, get RangeGetter) *RangeReader {
	return &RangeReader{ctx: ctx, get: get}
}

// ReadAt reads len(p) bytes at off; a short object is io.ErrUnexpectedEOF.
func (r *RangeReader) ReadAt(p []byte, off int64) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	rc, err := r.get(r.ctx, off, int64(len(p)))
	if err != nil {
		return 0, fmt.Errorf("segment: range %d+%d: %w", off, len(p), err)
	}
	defer rc.Close()
	n, err := io.ReadFull(rc, p)
	if err != nil {
		return n, fmt.Errorf("segment: range %d+%d: %w", off, len(p), err)
	}
	return n, nil
}
