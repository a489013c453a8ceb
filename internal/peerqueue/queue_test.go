package peerqueue

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgechat/edgechat/internal/testutil"
)

const waitFor = 10 * time.Second

// peer is a fake receiver: it fails while down or while it has failures
// left, loses replies on demand (applies, then errors), and dedupes with
// a Dedup as the broker does.
type peer struct {
	mu       sync.Mutex
	down     bool
	fail     int // next attempts that fail before applying
	lose     int // next attempts that apply and then fail
	block    chan struct{}
	got      []int // applied, deduped
	raw      []int // applied, with duplicates
	attempts int
	batches  []Batch[int]
	dedup    Dedup
}

func (p *peer) send(ctx context.Context, b Batch[int]) error {
	p.mu.Lock()
	p.attempts++
	p.batches = append(p.batches, Batch[int]{Epoch: b.Epoch, Seq: b.Seq, Next: b.Next, Items: slices.Clone(b.Items)})
	block := p.block
	p.mu.Unlock()
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.down {
		return errors.New("peer down")
	}
	if p.fail > 0 {
		p.fail--
		return errors.New("peer failed")
	}
	p.raw = append(p.raw, b.Items...)
	p.dedup.Accept("sender", b.Epoch, b.Seq, len(b.Items), func(skip int) {
		p.got = append(p.got, b.Items[skip:]...)
	})
	if p.lose > 0 {
		p.lose--
		return errors.New("reply lost")
	}
	return nil
}

func (p *peer) received() []int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.got)
}

// waitAttempts waits until the peer has seen at least n attempts.
func (p *peer) waitAttempts(t *testing.T, n int) {
	t.Helper()
	testutil.CheckFor(t, waitFor, time.Millisecond, func() error {
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.attempts < n {
			return fmt.Errorf("%d attempts, want %d", p.attempts, n)
		}
		return nil
	})
}

func (p *peer) set(f func(p *peer)) {
	p.mu.Lock()
	f(p)
	p.mu.Unlock()
}

func fastConfig(t *testing.T, reg prometheus.Registerer) Config[int] {
	t.Helper()
	m, err := NewMetrics(reg, "test_queue", "Test items")
	if err != nil {
		t.Fatal(err)
	}
	return Config[int]{MaxBatch: 3, BackoffMin: time.Millisecond, BackoffMax: 5 * time.Millisecond,
		Timeout: time.Second, Metrics: m, Logger: testutil.QuietLogger()}
}

func seq(from, to int) []int {
	var out []int
	for i := from; i < to; i++ {
		out = append(out, i)
	}
	return out
}

func waitReceived(t *testing.T, p *peer, want []int) {
	t.Helper()
	testutil.CheckFor(t, waitFor, time.Millisecond, func() error {
		if got := p.received(); !slices.Equal(got, want) {
			return fmt.Errorf("received %v, want %v", got, want)
		}
		return nil
	})
}

func metric(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	v, _ := testutil.MetricValue(t, reg, name, labels)
	return v
}

func TestOrderAndAtLeastOnceAcrossFailures(t *testing.T) {
	reg := prometheus.NewRegistry()
	p := &peer{fail: 3, lose: 2}
	q := New("n2", p.send, fastConfig(t, reg))
	defer func() { q.Close(ReasonClosed); q.Wait() }()
	for i := range 20 {
		if err := q.Push(i); err != nil {
			t.Fatal(err)
		}
	}
	waitReceived(t, p, seq(0, 20))
	testutil.CheckFor(t, waitFor, time.Millisecond, func() error {
		if n := q.Len(); n != 0 {
			return fmt.Errorf("%d pending", n)
		}
		return nil
	})
	p.mu.Lock()
	raw := slices.Clone(p.raw)
	p.mu.Unlock()
	if len(raw) <= 20 {
		t.Fatalf("lost replies should have made the peer see duplicates; raw %v", raw)
	}
	// Every batch is in order and starts where the acknowledged ones end.
	if r := metric(t, reg, "test_queue_retries_total", map[string]string{"peer": "n2"}); r != 5 {
		t.Fatalf("retries = %v, want 5", r)
	}
	if s := metric(t, reg, "test_queue_sent_total", map[string]string{"peer": "n2"}); s != 20 {
		t.Fatalf("sent = %v, want 20", s)
	}
	if s := metric(t, reg, "test_queue_queued_total", map[string]string{"peer": "n2"}); s != 20 {
		t.Fatalf("queued = %v, want 20", s)
	}
}

func TestOneBatchInFlightAtATime(t *testing.T) {
	p := &peer{block: make(chan struct{})}
	q := New("n2", p.send, fastConfig(t, nil))
	defer func() { q.Close(ReasonClosed); q.Wait() }()
	_ = q.Push(seq(0, 10)...)
	testutil.CheckFor(t, waitFor, time.Millisecond, func() error {
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.attempts != 1 {
			return fmt.Errorf("%d attempts", p.attempts)
		}
		return nil
	})
	p.mu.Lock()
	first := p.batches[0]
	p.mu.Unlock()
	if !slices.Equal(first.Items, []int{0, 1, 2}) || first.Seq != 0 || first.Next != 3 {
		t.Fatalf("first batch %+v", first)
	}
	close(p.block)
	waitReceived(t, p, seq(0, 10))
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, b := range p.batches[1:] {
		prev := p.batches[i]
		if b.Epoch != prev.Epoch || b.Seq != prev.Next {
			t.Fatalf("batch %d %+v does not follow %+v", i+1, b, prev)
		}
	}
}

func TestBoundIsCountedNeverSilent(t *testing.T) {
	reg := prometheus.NewRegistry()
	cfg := fastConfig(t, reg)
	cfg.MaxItems = 5
	p := &peer{down: true}
	q := New("n2", p.send, cfg)
	_ = q.Push(seq(0, 4)...)
	if err := q.Push(4, 5); !errors.Is(err, ErrFull) {
		t.Fatalf("Push over the bound = %v, want ErrFull", err)
	}
	if err := q.Push(4); err != nil {
		t.Fatalf("Push up to the bound = %v", err)
	}
	if err := q.Push(5); !errors.Is(err, ErrFull) {
		t.Fatalf("Push = %v, want ErrFull", err)
	}
	if d := metric(t, reg, "test_queue_dropped_total", map[string]string{"peer": "n2", "reason": ReasonFull}); d != 3 {
		t.Fatalf("queue_full = %v, want 3", d)
	}
	if g := metric(t, reg, "test_queue_pending", map[string]string{"peer": "n2"}); g != 5 {
		t.Fatalf("pending = %v, want 5", g)
	}
	if n := q.Close(ReasonClosed); n != 5 {
		t.Fatalf("Close dropped %d, want 5", n)
	}
	q.Wait()
	if d := metric(t, reg, "test_queue_dropped_total", map[string]string{"peer": "n2", "reason": ReasonClosed}); d != 5 {
		t.Fatalf("closed = %v, want 5", d)
	}
	if err := q.Push(1); !errors.Is(err, ErrClosed) {
		t.Fatalf("Push after Close = %v", err)
	}
	if _, ok := testutil.MetricValue(t, reg, "test_queue_pending", map[string]string{"peer": "n2"}); ok {
		t.Fatal("the pending gauge of a closed queue is still there")
	}
}

// A DropOldest queue keeps the newest items: the oldest pending ones
// that are not in flight make room, each reported and counted.
func TestDropOldestKeepsTheNewest(t *testing.T) {
	reg := prometheus.NewRegistry()
	cfg := fastConfig(t, reg)
	cfg.MaxItems, cfg.MaxBatch, cfg.DropOldest = 5, 2, true
	var mu sync.Mutex
	var dropped []int
	cfg.Dropped = func(peer string, items []int) {
		mu.Lock()
		dropped = append(dropped, items...)
		mu.Unlock()
	}
	p := &peer{block: make(chan struct{})}
	q := New("n2", p.send, cfg)
	defer func() { q.Close(ReasonClosed); q.Wait() }()
	_ = q.Push(seq(0, 5)...)
	p.waitAttempts(t, 1) // 0 and 1 are in flight: they must stay
	if err := q.Push(5, 6); err != nil {
		t.Fatalf("Push over the bound = %v, want room made", err)
	}
	if err := q.Push(seq(7, 20)...); err != nil { // more than fits: the oldest new ones go too
		t.Fatalf("Push = %v", err)
	}
	close(p.block)
	waitReceived(t, p, []int{0, 1, 17, 18, 19})
	mu.Lock()
	defer mu.Unlock()
	if want := []int{2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}; !slices.Equal(dropped, want) {
		t.Fatalf("dropped %v, want %v", dropped, want)
	}
	if d := metric(t, reg, "test_queue_dropped_total", map[string]string{"peer": "n2", "reason": ReasonOverflow}); d != 15 {
		t.Fatalf("overflow = %v, want 15", d)
	}
}

func TestCloseWhileSending(t *testing.T) {
	p := &peer{block: make(chan struct{})} // never unblocked: the attempt hangs until its ctx ends
	cfg := fastConfig(t, nil)
	cfg.Timeout = time.Hour
	q := New("n2", p.send, cfg)
	_ = q.Push(1, 2)
	p.waitAttempts(t, 1)
	done := make(chan struct{})
	go func() { q.Close(ReasonClosed); q.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(waitFor):
		t.Fatal("Close/Wait hung while a send was in flight")
	}
}

func TestAttemptTimeout(t *testing.T) {
	p := &peer{block: make(chan struct{})}
	cfg := fastConfig(t, nil)
	cfg.Timeout = 5 * time.Millisecond
	q := New("n2", p.send, cfg)
	defer func() { q.Close(ReasonClosed); q.Wait() }()
	_ = q.Push(1)
	p.waitAttempts(t, 3) // a hung send is timed out and retried
}

func TestPermanentErrorGivesTheBatchUp(t *testing.T) {
	reg := prometheus.NewRegistry()
	var mu sync.Mutex
	var got []int
	send := func(_ context.Context, b Batch[int]) error {
		if b.Items[0] == 0 {
			return Permanent(errors.New("malformed"))
		}
		mu.Lock()
		got = append(got, b.Items...)
		mu.Unlock()
		return nil
	}
	cfg := fastConfig(t, reg)
	cfg.MaxBatch = 1
	q := New("n2", send, cfg)
	defer func() { q.Close(ReasonClosed); q.Wait() }()
	_ = q.Push(0, 1, 2)
	testutil.CheckFor(t, waitFor, time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		if !slices.Equal(got, []int{1, 2}) {
			return fmt.Errorf("got %v", got)
		}
		return nil
	})
	if d := metric(t, reg, "test_queue_dropped_total", map[string]string{"reason": ReasonRefused}); d != 1 {
		t.Fatalf("refused = %v, want 1", d)
	}
}

func TestKeepPrunesAndStartsANewEpoch(t *testing.T) {
	reg := prometheus.NewRegistry()
	var gone sync.Map // items no longer wanted
	cfg := fastConfig(t, reg)
	cfg.MaxBatch = 10
	cfg.Keep = func(peer string, it int) bool {
		_, g := gone.Load(it)
		return peer == "n2" && !g
	}
	p := &peer{fail: 1}
	p.block = make(chan struct{})
	q := New("n2", p.send, cfg)
	defer func() { q.Close(ReasonClosed); q.Wait() }()
	_ = q.Push(seq(0, 6)...)
	p.waitAttempts(t, 1)
	// The first attempt (0..5) fails; before the retry 1 and 4 are pruned.
	gone.Store(1, true)
	gone.Store(4, true)
	close(p.block)
	waitReceived(t, p, []int{0, 2, 3, 5})
	if d := metric(t, reg, "test_queue_dropped_total", map[string]string{"reason": ReasonPruned}); d != 2 {
		t.Fatalf("pruned = %v, want 2", d)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.batches[0].Epoch == p.batches[1].Epoch {
		t.Fatal("pruning an attempted item kept the epoch: a receiver could skip items it never got")
	}
}

func TestSetPerPeerQueuesAndDrop(t *testing.T) {
	reg := prometheus.NewRegistry()
	peers := map[string]*peer{"n2": {}, "n3": {down: true}}
	send := func(ctx context.Context, b Batch[int]) error { return peers[b.Peer].send(ctx, b) }
	s := NewSet(send, fastConfig(t, reg))
	for i := range 5 {
		for _, name := range []string{"n2", "n3"} {
			if err := s.Push(name, i); err != nil {
				t.Fatal(err)
			}
		}
	}
	waitReceived(t, peers["n2"], seq(0, 5))
	if got := s.Peers(); !slices.Equal(got, []string{"n2", "n3"}) {
		t.Fatalf("Peers = %v", got)
	}
	if n, ok := s.Len("n3"); !ok || n != 5 {
		t.Fatalf("Len(n3) = %d, %v", n, ok)
	}
	dropped := s.Retain(func(p string) bool { return p != "n3" }, "not_member")
	if dropped["n3"] != 5 || len(dropped) != 1 {
		t.Fatalf("Retain dropped %v", dropped)
	}
	if _, ok := s.Len("n3"); ok {
		t.Fatal("n3 still has a queue")
	}
	if d := metric(t, reg, "test_queue_dropped_total", map[string]string{"peer": "n3", "reason": "not_member"}); d != 5 {
		t.Fatalf("not_member(n3) = %v, want 5", d)
	}
	if s := metric(t, reg, "test_queue_sent_total", map[string]string{"peer": "n2"}); s != 5 {
		t.Fatalf("sent(n2) = %v, want 5", s)
	}
	// The owner counts its own reasons in the same metric.
	s.Metrics().Dropped("n4", "not_member", 2)
	if d := metric(t, reg, "test_queue_dropped_total", map[string]string{"peer": "n4", "reason": "not_member"}); d != 2 {
		t.Fatalf("not_member(n4) = %v, want 2", d)
	}
	// A dropped peer that comes back gets a new queue.
	peers["n3"].set(func(p *peer) { p.down = false })
	_ = s.Push("n3", 7)
	waitReceived(t, peers["n3"], []int{7})
	if n, ok := s.Drop("n2", "not_member"); !ok || n != 0 {
		t.Fatalf("Drop(n2) = %d, %v", n, ok)
	}
	s.Close()
	s.Wait()
	if err := s.Push("n2", 1); !errors.Is(err, ErrClosed) {
		t.Fatalf("Push after Close = %v", err)
	}
}

func TestMetricsRegisterOncePerRegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := NewMetrics(reg, "x", "Items"); err != nil {
		t.Fatal(err)
	}
	if _, err := NewMetrics(reg, "x", "Items"); err == nil {
		t.Fatal("registering the same metrics twice succeeded")
	}
	if _, err := NewMetrics(nil, "x", "Items"); err != nil {
		t.Fatal(err)
	}
}

func TestDedup(t *testing.T) {
	var d Dedup
	var got []int
	accept := func(from string, epoch, seq uint64, items ...int) {
		d.Accept(from, epoch, seq, len(items), func(skip int) { got = append(got, items[skip:]...) })
	}
	accept("a", 1, 0, 0, 1, 2)
	accept("a", 1, 0, 0, 1, 2, 3) // a retry after a lost reply, grown
	accept("a", 1, 1, 1)          // a stale duplicate
	accept("a", 1, 4, 4)
	accept("b", 1, 0, 100) // another sender
	accept("a", 9, 0, 0)   // a new epoch: nothing skipped
	if want := []int{0, 1, 2, 3, 4, 100, 0}; !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}
