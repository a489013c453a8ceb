package peerqueue

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/edgechat/edgechat/internal/backoff"
)

// Errors of Push.
var (
	ErrFull   = errors.New("peerqueue: queue full")
	ErrClosed = errors.New("peerqueue: queue closed")
)

// Defaults of Config.
const (
	DefaultMaxItems   = 100_000
	DefaultMaxBatch   = 64
	DefaultTimeout    = 5 * time.Second
	DefaultBackoffMin = 20 * time.Millisecond
	DefaultBackoffMax = 2 * time.Second
)

// Batch is what one attempt sends: Items are the items at positions
// Seq..Next-1 of the queue's epoch Epoch. In memory Next is
// Seq+len(Items); a Persistent queue's positions are its Source's.
type Batch[T any] struct {
	Peer  string
	Epoch uint64
	Seq   uint64
	Next  uint64
	Items []T
}

// Sender delivers a batch to its peer; nil means acknowledged. A failed
// send is retried (the same items first, maybe more of them); an error
// wrapped with Permanent gives the batch up (counted as refused). ctx
// ends at the attempt's timeout or when the queue closes. Items must not
// be kept after the call returns.
type Sender[T any] func(ctx context.Context, b Batch[T]) error

// Permanent marks err as one that retrying cannot fix (the peer refused
// the batch as malformed): the queue gives the batch up.
func Permanent(err error) error { return permanentError{err} }

type permanentError struct{ error }

func (e permanentError) Unwrap() error { return e.error }

// IsPermanent reports whether err was marked with Permanent.
func IsPermanent(err error) bool { return errors.As(err, new(permanentError)) }

// Config tunes queues; zero fields take the defaults.
type Config[T any] struct {
	MaxItems   int           // items waiting per peer at most (memory queues)
	MaxBatch   int           // items per attempt at most
	Timeout    time.Duration // one attempt
	BackoffMin time.Duration // first delay after a failure
	BackoffMax time.Duration // the longest delay between attempts
	// Keep, when set, is asked before every attempt of a memory queue
	// whether each pending item is still wanted by peer; the others are
	// dropped (counted as pruned). It runs with the queue locked: it must
	// be quick and must not take a lock held while calling Push.
	Keep func(peer string, item T) bool
	// DropOldest: a Push over MaxItems drops the oldest pending items not
	// in flight to make room (counted as overflow) instead of refusing
	// the new ones, for destinations where the newest matter most (a
	// push notification). Dropped, when set, hears of each item dropped
	// that way, outside the queue's lock.
	DropOldest bool
	Dropped    func(peer string, items []T)
	// Metrics counts per peer; nil: private metrics, not registered.
	Metrics *Metrics
	Logger  *slog.Logger
}

func (c Config[T]) withDefaults() Config[T] {
	setDefault := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	setDefault(&c.MaxItems, DefaultMaxItems)
	setDefault(&c.MaxBatch, DefaultMaxBatch)
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	if c.BackoffMin <= 0 {
		c.BackoffMin = DefaultBackoffMin
	}
	if c.BackoffMax <= 0 {
		c.BackoffMax = DefaultBackoffMax
	}
	if c.Metrics == nil {
		c.Metrics, _ = NewMetrics(nil, "peerqueue", "Items") // cannot fail unregistered
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Queue is the in-memory queue for one peer, with its sender goroutine.
type Queue[T any] struct {
	peer string
	send Sender[T]
	cfg  Config[T]
	m    *peerMetrics

	ctx    context.Context // ends at Close: aborts an attempt in flight
	cancel context.CancelFunc
	wake   chan struct{}
	done   chan struct{} // closed when the sender goroutine returned

	mu       sync.Mutex
	items    []T // items[head:] are pending, oldest first
	head     int
	epoch    uint64
	seq      uint64 // seq of items[head]
	inflight int    // items[head:head+inflight] were attempted and not acknowledged
	closed   bool
}

// New starts a queue for peer that sends with send.
func New[T any](peer string, send Sender[T], cfg Config[T]) *Queue[T] {
	cfg = cfg.withDefaults()
	q := &Queue[T]{peer: peer, send: send, cfg: cfg, m: cfg.Metrics.forPeer(peer), epoch: newEpoch(),
		wake: make(chan struct{}, 1), done: make(chan struct{})}
	q.ctx, q.cancel = context.WithCancel(context.Background())
	q.m.pending.Set(0)
	go q.run()
	return q
}

func newEpoch() uint64 {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return binary.BigEndian.Uint64(b[:]) | 1 // never 0: receivers take 0 as "no state"
}

// Peer is the queue's destination.
func (q *Queue[T]) Peer() string { return q.peer }

// Push appends items in order. When they do not all fit under MaxItems
// none is queued: ErrFull (counted as queue_full); after Close ErrClosed
// (counted as closed).
func (q *Queue[T]) Push(items ...T) error {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		q.m.dropped(ReasonClosed, len(items))
		return ErrClosed
	}
	n := len(q.items) - q.head
	var overflow []T
	if n+len(items) > q.cfg.MaxItems {
		if !q.cfg.DropOldest {
			q.mu.Unlock()
			q.m.dropped(ReasonFull, len(items))
			return fmt.Errorf("%w: %d items for %s", ErrFull, n, q.peer)
		}
		overflow, items = q.makeRoomLocked(items)
		n = len(q.items) - q.head
	}
	q.items = append(q.items, items...)
	q.m.pending.Set(float64(n + len(items)))
	q.mu.Unlock()
	if len(overflow) > 0 {
		q.m.dropped(ReasonOverflow, len(overflow))
		if q.cfg.Dropped != nil {
			q.cfg.Dropped(q.peer, overflow)
		}
	}
	q.m.queued.Add(float64(len(items)))
	select {
	case q.wake <- struct{}{}:
	default:
	}
	return nil
}

// makeRoomLocked removes the oldest pending items that are not in flight
// so that items fit under MaxItems; when even that is not enough, the
// oldest of items go too. It returns what was dropped and what of items
// is left to append.
func (q *Queue[T]) makeRoomLocked(items []T) (dropped, keep []T) {
	n := len(q.items) - q.head
	excess := n + len(items) - q.cfg.MaxItems
	droppable := n - q.inflight
	k := min(excess, droppable)
	if k > 0 {
		from := q.head + q.inflight
		dropped = append(dropped, q.items[from:from+k]...)
		q.items = append(q.items[:from], q.items[from+k:]...)
		clear(q.items[len(q.items) : len(q.items)+k])
		excess -= k
	}
	if excess > 0 {
		dropped = append(dropped, items[:excess]...)
		items = items[excess:]
	}
	return dropped, items
}

// Len is the number of items not yet acknowledged.
func (q *Queue[T]) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.items) - q.head
}

// Close stops the queue: an attempt in flight is aborted, and the pending
// items are dropped and counted with reason. It returns their number.
// Close does not wait for the sender; Wait does.
func (q *Queue[T]) Close(reason string) int {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return 0
	}
	q.closed = true
	n := len(q.items) - q.head
	q.items, q.head = nil, 0
	q.mu.Unlock()
	q.cancel()
	q.m.dropped(reason, n)
	q.m.gone()
	return n
}

// Wait waits until the sender goroutine returned (after Close).
func (q *Queue[T]) Wait() { <-q.done }

func (q *Queue[T]) run() {
	defer close(q.done)
	bo := backoff.New(q.cfg.BackoffMin, q.cfg.BackoffMax)
	for {
		b, ok := q.next()
		if !ok {
			return
		}
		if len(b.Items) == 0 {
			continue // everything was pruned
		}
		ctx, cancel := context.WithTimeout(q.ctx, q.cfg.Timeout)
		err := q.send(ctx, b)
		cancel()
		if err != nil && IsPermanent(err) {
			q.m.dropped(ReasonRefused, len(b.Items))
			q.cfg.Logger.Warn("peer refused a batch; given up", "peer", q.peer, "items", len(b.Items), "error", err)
			err = nil
		} else if err == nil {
			q.m.sent.Add(float64(len(b.Items)))
			q.m.batches.Inc()
		}
		if err == nil {
			q.ack(len(b.Items))
			bo.Reset()
			continue
		}
		if q.ctx.Err() != nil {
			return
		}
		q.m.retries.Inc()
		d := bo.Next()
		q.cfg.Logger.Debug("peer send failed; retrying", "peer", q.peer, "items", len(b.Items), "in", d, "error", err)
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-q.ctx.Done():
			t.Stop()
			return
		}
	}
}

// next waits for pending items and returns the next batch; false once
// the queue is closed.
func (q *Queue[T]) next() (Batch[T], bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.items) == q.head && !q.closed {
		q.mu.Unlock()
		select {
		case <-q.wake:
		case <-q.ctx.Done():
		}
		q.mu.Lock()
	}
	if q.closed {
		return Batch[T]{}, false
	}
	if q.cfg.Keep != nil {
		q.pruneLocked()
	}
	n := min(len(q.items)-q.head, q.cfg.MaxBatch)
	q.inflight = n
	items := make([]T, n)
	copy(items, q.items[q.head:])
	return Batch[T]{Peer: q.peer, Epoch: q.epoch, Seq: q.seq, Next: q.seq + uint64(n), Items: items}, true
}

// pruneLocked drops the pending items Keep no longer wants. When one of
// them was in an attempted batch the positions of what follows change:
// a new epoch then tells the receiver to skip nothing.
func (q *Queue[T]) pruneLocked() {
	keep := q.items[q.head:q.head]
	pruned, newEpoch := 0, false
	for i, it := range q.items[q.head:] {
		if q.cfg.Keep(q.peer, it) {
			keep = append(keep, it)
			continue
		}
		pruned++
		if i < q.inflight {
			newEpoch = true
		}
	}
	if pruned == 0 {
		return
	}
	clear(q.items[q.head+len(keep):])
	q.items = q.items[:q.head+len(keep)]
	if newEpoch {
		q.epoch = newEpochValue(q.epoch)
	}
	q.m.dropped(ReasonPruned, pruned)
	q.m.pending.Set(float64(len(keep)))
}

// newEpochValue is a fresh epoch other than old.
func newEpochValue(old uint64) uint64 {
	for {
		if e := newEpoch(); e != old {
			return e
		}
	}
}

// ack removes the n oldest items, acknowledged (or given up).
func (q *Queue[T]) ack(n int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return
	}
	clear(q.items[q.head : q.head+n]) // let the payloads go
	q.head += n
	q.seq += uint64(n)
	q.inflight = 0
	switch {
	case q.head == len(q.items):
		q.items, q.head = q.items[:0], 0
	case q.head > 1024 && q.head > len(q.items)/2:
		q.items = append(q.items[:0:0], q.items[q.head:]...)
		q.head = 0
	}
	q.m.pending.Set(float64(len(q.items) - q.head))
}
