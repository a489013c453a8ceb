package archive

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// switchedSegments is a segment store that can be taken down: every
// call then fails as a dial to a server that is down does. It records
// the conversations (object key directories) whose segments were asked
// for while it was down.
type switchedSegments struct {
	SegmentStore
	down atomic.Bool

	mu    sync.Mutex
	asked map[string]bool
}

func (s *switchedSegments) refused(key string) error {
	if !s.down.Load() {
		return nil
	}
	s.mu.Lock()
	if i := strings.LastIndexByte(key, '/'); i >= 0 {
		s.asked[key[:i]] = true
	}
	s.mu.Unlock()
	return &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
}

func (s *switchedSegments) Get(ctx context.Context, key string, off, n int64) (io.ReadCloser, error) {
	if err := s.refused(key); err != nil {
		return nil, err
	}
	return s.SegmentStore.Get(ctx, key, off, n)
}

func (s *switchedSegments) Size(ctx context.Context, key string) (int64, error) {
	if err := s.refused(key); err != nil {
		return 0, err
	}
	return s.SegmentStore.Size(ctx, key)
}

func (s *switchedSegments) Put(ctx context.Context, key string, data []byte) error {
	if err := s.refused(key); err != nil {
		return err
	}
	return s.SegmentStore.Put(ctx, key, data)
}

// A retention sweep whose segment store cannot be reached stops asking
// it after the first conversation that needs it (each ask waits out the
// S3 client's retries, up to segmentGetTimeout per GET: one after the
// other for every conversation with sealed messages to expire, while
// sealing, after retention in the same loop, waited), and still expires
// the conversations whose expiring messages are all hot.
func TestRetentionStopsAskingAStoreThatCannotBeReached(t *testing.T) {
	segs, _ := localSegments(t, true)
	st := &switchedSegments{SegmentStore: segs, asked: map[string]bool{}}
	e := newEnv(t, withSegments(st), withUsers(anyUser{}))
	for _, peer := range []string{"bob", "carol", "dave"} {
		for i := range 5 {
			e.send(t, "alice", peer, fmt.Sprintf("%s%d", peer, i))
		}
	}
	if s, err := e.svc.SealOnce(context.Background(), SealConfig{}, time.Now().Add(DefaultHotAge+time.Hour)); err != nil || s.Segments != 3 {
		t.Fatalf("seal: %+v %v", s, err)
	}
	// A conversation with hot messages only.
	for i := range 3 {
		e.send(t, "erin", "frank", fmt.Sprintf("ef%d", i))
	}
	st.down.Store(true)
	ex, err := e.svc.ExpireOnce(context.Background(), RetentionPolicy{Days: 1}, time.Now())
	if len(st.asked) != 1 {
		t.Errorf("the store, down, was asked for the segments of %d conversations %v (%+v %v), want 1", len(st.asked), st.asked, ex, err)
	}
	if !errors.Is(err, ErrSegmentUnavailable) {
		t.Errorf("the sweep's error: %v, want the store's", err)
	}
	if n := hotCount(t, e.db, directConv("erin", "frank")); n != 0 {
		t.Errorf("%d hot messages of erin and frank left, want every one expired (%+v)", n, ex)
	}
	// Back up: the next sweep expires the others.
	st.down.Store(false)
	if ex, err := e.svc.ExpireOnce(context.Background(), RetentionPolicy{Days: 1}, time.Now()); err != nil || ex.Segments != 3 {
		t.Errorf("the next sweep, the store back: %+v %v, want 3 segments expired", ex, err)
	}
}
