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

// apeer is a fake receiver for an AsyncSender: start applies the batch
// at once (in the order of the starts, deduped by position, as a link's
// receiver does by origin ID), wait answers later: when hold is nil or
// closed, with the failure or refusal planned for the batch's Seq.
type apeer struct {
	mu        sync.Mutex
	starts    []Batch[int] // every start, in order
	got       []int        // applied, deduped
	applied   uint64       // the position after the last applied item
	hold      chan struct{}
	failStart map[uint64]int // Seq → starts that fail, not applied
	failWait  map[uint64]int // Seq → waits that fail (applied: a lost ack)
	refuse    map[uint64]bool
	acked     map[uint64]uint64 // Seq → Next of batches acknowledged or refused
	waiting   int               // wait calls not returned
	cursorErr error             // the first save past what was acknowledged
}

func newAPeer() *apeer {
	return &apeer{applied: 1, failStart: map[uint64]int{}, failWait: map[uint64]int{},
		refuse: map[uint64]bool{}, acked: map[uint64]uint64{}}
}

func (p *apeer) start(ctx context.Context, b Batch[int]) (func() error, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.starts = append(p.starts, Batch[int]{Seq: b.Seq, Next: b.Next, Items: slices.Clone(b.Items)})
	if p.failStart[b.Seq] > 0 {
		p.failStart[b.Seq]--
		return nil, errors.New("write failed")
	}
	for i, it := range b.Items {
		if pos := b.Seq + uint64(i); pos >= p.applied {
			if pos != p.applied {
				return nil, fmt.Errorf("item at %d applied after %d: a gap", pos, p.applied-1)
			}
			p.got = append(p.got, it)
			p.applied++
		}
	}
	hold := p.hold
	p.waiting++
	return func() error {
		defer p.set(func(p *apeer) { p.waiting-- })
		if hold != nil {
			select {
			case <-hold:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		switch {
		case p.failWait[b.Seq] > 0:
			p.failWait[b.Seq]--
			return errors.New("ack lost")
		case p.refuse[b.Seq]:
			p.acked[b.Seq] = b.Next
			return Permanent(errors.New("refused"))
		}
		p.acked[b.Seq] = b.Next
		return nil
	}, nil
}

func (p *apeer) set(f func(p *apeer)) {
	p.mu.Lock()
	f(p)
	p.mu.Unlock()
}

func (p *apeer) received() []int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.got)
}

func (p *apeer) startsSeq() []uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []uint64
	for _, b := range p.starts {
		out = append(out, b.Seq)
	}
	return out
}

// checkedCursor is a CursorStore that records, in its peer, a save past
// a batch the peer did not acknowledge.
type checkedCursor struct {
	memCursor
	p     *apeer
	first uint64
}

func (c *checkedCursor) Save(pos uint64) error {
	c.p.mu.Lock()
	for at := c.first; at < pos; {
		next, ok := c.p.acked[at]
		if !ok {
			if c.p.cursorErr == nil {
				c.p.cursorErr = fmt.Errorf("cursor saved at %d: the batch at %d was not acknowledged", pos, at)
			}
			break
		}
		at = next
	}
	c.p.mu.Unlock()
	return c.memCursor.Save(pos)
}

func waitAReceived(t *testing.T, p *apeer, want []int) {
	t.Helper()
	testutil.CheckFor(t, waitFor, time.Millisecond, func() error {
		if got := p.received(); !slices.Equal(got, want) {
			return fmt.Errorf("received %v, want %v", got, want)
		}
		return nil
	})
}

func waitCursor(t *testing.T, c interface{ load() uint64 }, want uint64) {
	t.Helper()
	testutil.CheckFor(t, waitFor, time.Millisecond, func() error {
		if got := c.load(); got != want {
			return fmt.Errorf("cursor %d, want %d", got, want)
		}
		return nil
	})
}

func (c *checkedCursor) load() uint64 { return c.memCursor.load() }

// Several batches go out before the first is acknowledged, no more than
// depth; the cursor moves only once they are.
func TestPipelinedKeepsDepthBatchesInFlight(t *testing.T) {
	reg := prometheus.NewRegistry()
	src := &memLog{}
	p := newAPeer()
	p.hold = make(chan struct{})
	cur := &checkedCursor{p: p, first: 1}
	q, err := NewPipelined[int]("eu", src, cur, p.start, fastConfig(t, reg), 1, 1, 3)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { q.Close(); q.Wait() }()
	src.append(seq(0, 12)...)
	q.Notify()
	waitAReceived(t, p, seq(0, 9)) // three batches of 3, unacknowledged
	// A fourth is not started while three are in flight (a wake does not
	// change that); the cursor has not moved.
	q.Notify()
	src.append(12)
	q.Notify()
	if s := p.startsSeq(); !slices.Equal(s, []uint64{1, 4, 7}) {
		t.Fatalf("started %v, want the batches at 1, 4, 7", s)
	}
	if c := q.Cursor(); c != 1 {
		t.Fatalf("cursor %d before any acknowledgement", c)
	}
	if v := metric(t, reg, "test_queue_pending", map[string]string{"peer": "eu"}); v != 9 {
		t.Fatalf("pending = %v, want 9", v)
	}
	close(p.hold)
	waitAReceived(t, p, seq(0, 13))
	waitCursor(t, cur, 14)
	if q.Cursor() != 14 {
		t.Fatalf("Cursor = %d", q.Cursor())
	}
	if s := metric(t, reg, "test_queue_sent_total", map[string]string{"peer": "eu"}); s != 13 {
		t.Fatalf("sent = %v, want 13", s)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cursorErr != nil {
		t.Fatal(p.cursorErr)
	}
}

// The head's failure while later batches are in flight (acknowledged or
// not): they are abandoned, the queue resends from the cursor, in
// order, and the receiver (deduping) gets each item once.
func TestPipelinedFailureInTheMiddleResendsFromTheCursor(t *testing.T) {
	reg := prometheus.NewRegistry()
	src := &memLog{}
	src.append(seq(0, 12)...)
	p := newAPeer()
	p.hold = make(chan struct{})
	p.failWait[4] = 1 // the second batch's ack is lost
	cur := &checkedCursor{p: p, first: 1}
	q, err := NewPipelined[int]("eu", src, cur, p.start, fastConfig(t, reg), 1, 1, 3)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { q.Close(); q.Wait() }()
	waitAReceived(t, p, seq(0, 9))
	close(p.hold) // 1 ok, 4 fails, 7 ok but abandoned
	waitAReceived(t, p, seq(0, 12))
	waitCursor(t, cur, 13)
	// 1, 4, 7 (and maybe 10 once 1 was acknowledged), then again from
	// the cursor: 4, 7, 10.
	got := p.startsSeq()
	k := slices.Index(got[2:], 4) + 2
	if k < 3 || !slices.Equal(got[:k], []uint64{1, 4, 7, 10}[:k]) || !slices.Equal(got[k:], []uint64{4, 7, 10}) {
		t.Fatalf("starts %v: want 1, 4, 7 (10), then 4, 7, 10 from the cursor", got)
	}
	if r := metric(t, reg, "test_queue_retries_total", map[string]string{"peer": "eu"}); r != 1 {
		t.Fatalf("retries = %v, want 1", r)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cursorErr != nil {
		t.Fatal(p.cursorErr)
	}
}

// Failures everywhere: starts that fail, acks lost, one batch refused
// for good. Every item arrives, in order, at least once; the cursor is
// never saved past what was acknowledged.
func TestPipelinedOrderAndAtLeastOnceAcrossFailures(t *testing.T) {
	reg := prometheus.NewRegistry()
	src := &memLog{}
	p := newAPeer()
	for _, s := range []uint64{1, 7, 16, 25} {
		p.failWait[s] = 2
	}
	for _, s := range []uint64{4, 13, 28} {
		p.failStart[s] = 1
	}
	p.refuse[19] = true
	cur := &checkedCursor{p: p, first: 1}
	q, err := NewPipelined[int]("eu", src, cur, p.start, fastConfig(t, reg), 1, 1, 4)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		for s, n := range p.failWait {
			if n > 0 {
				t.Errorf("the planned lost acks of the batch at %d did not all happen", s)
			}
		}
		for s, n := range p.failStart {
			if n > 0 {
				t.Errorf("the planned failed start of the batch at %d did not happen", s)
			}
		}
	}()
	defer func() { q.Close(); q.Wait() }()
	src.append(seq(0, 30)...) // batches at 1, 4, 7, ...: the plan's Seqs
	q.Notify()
	waitAReceived(t, p, seq(0, 30))
	waitCursor(t, cur, 31)
	if d := metric(t, reg, "test_queue_dropped_total", map[string]string{"peer": "eu", "reason": ReasonRefused}); d == 0 {
		t.Fatal("the refused batch was not counted")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cursorErr != nil {
		t.Fatal(p.cursorErr)
	}
}

// Close with batches in flight: every wait returns (ctx ends) before
// Wait does, the cursor stays where the acknowledgements left it, and
// the next queue over the same store resends the rest.
func TestPipelinedCloseWithBatchesInFlight(t *testing.T) {
	src := &memLog{}
	src.append(seq(0, 9)...)
	p := newAPeer()
	p.hold = make(chan struct{})
	cur := &memCursor{}
	q, err := NewPipelined[int]("eu", src, cur, p.start, fastConfig(t, nil), 1, 1, 3)
	if err != nil {
		t.Fatal(err)
	}
	waitAReceived(t, p, seq(0, 9))
	done := make(chan struct{})
	go func() { q.Close(); q.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(waitFor):
		t.Fatal("Wait did not return with batches in flight")
	}
	p.mu.Lock()
	waiting := p.waiting
	p.mu.Unlock()
	if waiting != 0 {
		t.Fatalf("%d wait calls still running after Wait", waiting)
	}
	if pos, saved, _ := cur.Load(); saved || pos != 0 {
		t.Fatalf("cursor saved at %d with nothing acknowledged", pos)
	}

	p2 := newAPeer()
	q2, err := NewPipelined[int]("eu", src, cur, p2.start, fastConfig(t, nil), 1, 1, 3)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { q2.Close(); q2.Wait() }()
	waitAReceived(t, p2, seq(0, 9))
	waitCursor(t, cur, 10)
}

// A gap in the source's positions is stepped over; the cursor moves past
// it.
func TestPipelinedSkipsAGap(t *testing.T) {
	src := &gapLog{gapAt: 4, gapTo: 10}
	src.append(seq(0, 3)...)
	p := newAPeer()
	p.applied = 1
	cur := &memCursor{}
	cfg := fastConfig(t, nil)
	q, err := NewPipelined[int]("eu", src, cur, func(ctx context.Context, b Batch[int]) (func() error, error) {
		if b.Seq >= 10 { // positions 4-9 hold nothing: renumber for the fake's gap check
			b.Seq -= 6
			b.Next -= 6
		}
		return p.start(ctx, b)
	}, cfg, 1, 1, 3)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { q.Close(); q.Wait() }()
	waitAReceived(t, p, seq(0, 3))
	waitCursor(t, cur, 4)
	src.append(3, 4)
	q.Notify()
	waitAReceived(t, p, seq(0, 5))
	waitCursor(t, cur, 12)
}

// gapLog is a memLog whose positions gapAt..gapTo-1 hold nothing: item
// i is at i+1 below gapAt, at i+1+(gapTo-gapAt) from there on, and a read
// inside the gap returns no items and next gapTo.
type gapLog struct {
	memLog
	gapAt, gapTo uint64
}

func (l *gapLog) Read(from uint64, max int) ([]int, uint64, error) {
	if from >= l.gapAt && from < l.gapTo {
		l.mu.Lock()
		n := uint64(len(l.items))
		l.mu.Unlock()
		if n+1 > l.gapAt {
			return nil, l.gapTo, nil
		}
		return nil, from, nil
	}
	shift := uint64(0)
	if from >= l.gapTo {
		shift = l.gapTo - l.gapAt
	}
	items, next, err := l.memLog.Read(from-shift, max)
	if shift == 0 && next > l.gapAt {
		items, next = items[:l.gapAt-from], l.gapAt
	}
	return items, next + shift, err
}
