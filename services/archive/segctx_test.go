package archive

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/edgechat/edgechat/services/archive/segment"
)

// stallingSegments is a segment store whose reads hang, once stalled,
// until their context ends (an object store that accepts the connection
// and never answers) or the test releases them.
type stallingSegments struct {
	SegmentStore
	stalled atomic.Bool
	release chan struct{}
}

func (s *stallingSegments) Get(ctx context.Context, key string, off, n int64) (io.ReadCloser, error) {
	if s.stalled.Load() {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-s.release:
		}
	}
	return s.SegmentStore.Get(ctx, key, off, n)
}

// A page whose request has ended stops waiting for a segment store that
// does not answer: the block reads of a segment opened by an earlier
// request are bounded by the request that needs them, not by none (a
// stalled store held every such request, and its goroutine, until the
// S3 client gave up minutes later, whatever the client did); and a
// request that waits on gets its answer (503) once a GET has taken
// segmentGetTimeout.
func TestSealedReadsEndWithTheirRequest(t *testing.T) {
	segs, _ := localSegments(t, true)
	st := &stallingSegments{SegmentStore: segs, release: make(chan struct{})}
	t.Cleanup(func() { close(st.release) })
	e := newEnv(t, withSegments(st))
	for i := range 50 {
		e.send(t, "alice", "bob", fmt.Sprintf("ab%d", i))
	}
	if s, err := e.svc.SealOnce(context.Background(), SealConfig{}, time.Now().Add(DefaultHotAge+time.Hour)); err != nil || s.Segments != 1 {
		t.Fatalf("sealed %+v %v", s, err)
	}
	conv := directConv("alice", "bob")
	if _, _, err := e.svc.historyPage(context.Background(), conv, nil, 50); err != nil {
		t.Fatal(err) // opens the segment (its index stays cached)
	}
	e.svc.tier.blocks = segment.NewCache(defaultSegmentCacheBytes) // its blocks are read again
	st.stalled.Store(true)
	page := func(ctx context.Context, what string) {
		t.Helper()
		done := make(chan error, 1)
		go func() {
			_, _, err := e.svc.historyPage(ctx, conv, nil, 50)
			done <- err
		}()
		select {
		case err := <-done:
			if !errors.Is(err, ErrSegmentUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("%s: the page ended with %v, want the segment store unavailable (a deadline)", what, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: the page still waits for the segment store after 10 s", what)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	page(ctx, "a request that ended after 100 ms")
	// A request that waits on: each GET has a bound of its own.
	defer func(d time.Duration) { segmentGetTimeout = d }(segmentGetTimeout)
	segmentGetTimeout = 100 * time.Millisecond
	page(context.Background(), "a request without a deadline")
}

// shortSegments answers reads, once cut, with a body one byte short (a
// connection that dropped mid-body, as Go's HTTP client reports it).
type shortSegments struct {
	SegmentStore
	cut atomic.Bool
}

func (s *shortSegments) Get(ctx context.Context, key string, off, n int64) (io.ReadCloser, error) {
	rc, err := s.SegmentStore.Get(ctx, key, off, n)
	if err != nil || !s.cut.Load() {
		return rc, err
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	return io.NopCloser(io.MultiReader(bytes.NewReader(b[:len(b)-1]), errReader{io.ErrUnexpectedEOF})), nil
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// A read cut short by the connection is the store failing (503, tried
// again; retention skips the conversation this sweep), not a damaged
// segment (500; retention drops an expired one without deleting what its
// messages referred to): the object still has the size its index entry
// says.
func TestASegmentReadCutShortIsNotADamagedSegment(t *testing.T) {
	segs, _ := localSegments(t, true)
	st := &shortSegments{SegmentStore: segs}
	e := newEnv(t, withSegments(st))
	for i := range 50 {
		e.send(t, "alice", "bob", fmt.Sprintf("ab%d", i))
	}
	if s, err := e.svc.SealOnce(context.Background(), SealConfig{}, time.Now().Add(DefaultHotAge+time.Hour)); err != nil || s.Segments != 1 {
		t.Fatalf("sealed %+v %v", s, err)
	}
	st.cut.Store(true)
	_, _, err := e.svc.historyPage(context.Background(), directConv("alice", "bob"), nil, 50)
	if !errors.Is(err, ErrSegmentUnavailable) || errors.Is(err, ErrSegmentCorrupt) {
		t.Fatalf("a read cut short: %v, want the store unavailable, not a damaged segment", err)
	}
}

// downSegments cannot be reached: every upload fails as a dial to a
// server that is down does; it counts them.
type downSegments struct {
	SegmentStore
	puts atomic.Int32
}

func (s *downSegments) Put(ctx context.Context, key string, data []byte) error {
	s.puts.Add(1)
	return &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
}

// A sweep whose store cannot be reached ends at the first upload, rather than try (and
// wait on the S3 client's retries, seconds to minutes each) for every
// other conversation due, while retention, which runs before sealing in
// the same loop, waits for it.
func TestASweepStopsAtAStoreThatRefusesUploads(t *testing.T) {
	segs, _ := localSegments(t, true)
	st := &downSegments{SegmentStore: segs}
	e := newEnv(t, withSegments(st))
	for _, peer := range []string{"bob", "carol", "dave"} {
		for i := range 5 {
			e.send(t, "alice", peer, fmt.Sprintf("%s%d", peer, i))
		}
	}
	s, err := e.svc.SealOnce(context.Background(), SealConfig{}, time.Now().Add(DefaultHotAge+time.Hour))
	if !errors.Is(err, ErrSegmentUnavailable) || s.Segments != 0 {
		t.Fatalf("the sweep: %+v %v, want it ended by the store", s, err)
	}
	if n := st.puts.Load(); n != 1 {
		t.Fatalf("%d uploads tried for 3 conversations with the store down, want 1", n)
	}
}
