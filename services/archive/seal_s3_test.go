package archive

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgechat/edgechat/services/media/store"
	"github.com/edgechat/edgechat/services/media/store/storetest"
)

// slowDownPuts is a transport to a real S3 server (MinIO) that, once
// on, answers every PUT into bucket as S3 does when it throttles or
// fails: 503 SlowDown. It records the keys tried.
type slowDownPuts struct {
	next   http.RoundTripper
	bucket string
	on     atomic.Bool

	mu   sync.Mutex
	keys map[string]int
}

func (s *slowDownPuts) RoundTrip(req *http.Request) (*http.Response, error) {
	if !s.on.Load() || req.Method != http.MethodPut || !strings.HasPrefix(req.URL.Path, "/"+s.bucket+"/") {
		return s.next.RoundTrip(req)
	}
	if req.Body != nil {
		io.Copy(io.Discard, req.Body)
		req.Body.Close()
	}
	s.mu.Lock()
	s.keys[strings.TrimPrefix(req.URL.Path, "/"+s.bucket+"/")]++
	s.mu.Unlock()
	body := `<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>`
	return &http.Response{
		StatusCode: http.StatusServiceUnavailable, Status: "503 Service Unavailable",
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header:        http.Header{"Content-Type": {"application/xml"}},
		Body:          io.NopCloser(strings.NewReader(body)),
		ContentLength: int64(len(body)),
		Request:       req,
	}, nil
}

// conversations tells how many conversations' segments were tried.
func (s *slowDownPuts) conversations() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	seen := map[string]bool{}
	for k := range s.keys {
		k = strings.TrimPrefix(k, "o/")
		if i := strings.LastIndexByte(k, '/'); i >= 0 {
			k = k[:i]
		}
		if j := strings.IndexByte(k, '/'); j >= 0 && !strings.HasPrefix(k, "d/") && !strings.HasPrefix(k, "g/") {
			k = k[j+1:] // the owner element of a mark
		}
		seen[k] = true
	}
	var out []string
	for k := range seen {
		out = append(out, k)
	}
	return out
}

// An S3 store that answers uploads with 5xx (503 SlowDown when it
// throttles, 500 InternalError, a gateway's 502/504) fails every
// conversation alike: the sweep ends at the first, as for a store that
// cannot be reached, rather than wait out the S3 client's retries (10,
// several seconds) for each conversation due while retention waits
// behind it, and hammer a throttling store with more.
func TestASweepStopsAtAStoreThatAnswers5xx(t *testing.T) {
	m := storetest.StartMinIO(t)
	cfg := m.Config("seal5xx")
	cfg.ArchiveBucket = strings.TrimSuffix(cfg.RawBucket, "-raw") + "-archive"
	tr := &slowDownPuts{next: http.DefaultTransport.(*http.Transport).Clone(), bucket: cfg.ArchiveBucket, keys: map[string]int{}}
	cfg.Transport = tr
	st, err := store.NewS3(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, withSegments(NewObjectSegments(st, true)))
	for _, peer := range []string{"bob", "carol", "dave"} {
		for i := range 5 {
			e.send(t, "alice", peer, fmt.Sprintf("%s%d", peer, i))
		}
	}
	tr.on.Store(true)
	start := time.Now()
	s, err := e.svc.SealOnce(context.Background(), SealConfig{}, time.Now().Add(DefaultHotAge+time.Hour))
	took := time.Since(start)
	if !errors.Is(err, ErrSegmentUnavailable) || s.Segments != 0 {
		t.Fatalf("the sweep: %+v %v, want it ended by the store", s, err)
	}
	if convs := tr.conversations(); len(convs) != 1 {
		t.Fatalf("uploads tried for %d conversations %v with the store answering 503 SlowDown (sweep took %v, %+v), want 1", len(convs), convs, took.Round(time.Millisecond), s)
	}
}
