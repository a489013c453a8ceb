package segment

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
)

// A segment read through ranged requests gives the same messages as one
// read from memory, with one request for the header, the trailer, the
// index and each block read.
func TestRangeReaderReadsASegment(t *testing.T) {
	in := messages(300, 5)
	data, _, err := Write("d:alice:bob", in, 2048)
	if err != nil {
		t.Fatal(err)
	}
	requests := 0
	get := func(_ context.Context, off, length int64) (io.ReadCloser, error) {
		requests++
		if off >= int64(len(data)) {
			return nil, errors.New("range past the end")
		}
		end := min(off+length, int64(len(data)))
		return io.NopCloser(bytes.NewReader(data[off:end])), nil
	}
	rr := NewRangeReader(context.Background(), get)
	sr, err := Open(rr, int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	if requests != 3 {
		t.Fatalf("Open made %d requests, want 3 (header, trailer, index)", requests)
	}
	dec, _ := NewDecoder()
	defer dec.Close()
	i := sr.BlockFor(in[150].ID)
	msgs, err := sr.ReadBlock(i, dec)
	if err != nil {
		t.Fatal(err)
	}
	if requests != 4 {
		t.Fatalf("one block took %d requests", requests-3)
	}
	found := false
	for _, m := range msgs {
		found = found || (m.ID == in[150].ID && bytes.Equal(m.Body, in[150].Body))
	}
	if !found {
		t.Fatal("message not in its block")
	}
	// An object shorter than its index says (a truncated upload) is an error.
	short := NewRangeReader(context.Background(), func(_ context.Context, off, length int64) (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data[off : off+length/2])), nil
	})
	if _, err := Open(short, int64(len(data))); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("short reads: %v", err)
	}
}
