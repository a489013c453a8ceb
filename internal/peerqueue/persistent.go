package peerqueue

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/edgechat/edgechat/internal/backoff"
)

// Source is the durable log a Persistent queue sends from, read by
// position. Read returns up to max items from position from on, and the
// position after the last one; no items (and next == from) when there is
// nothing new. Positions only grow; items at a position never change.
type Source[T any] interface {
	Read(from uint64, max int) (items []T, next uint64, err error)
}

// CursorStore keeps a Persistent queue's acknowledged position. Load's
// ok is false when nothing was saved yet. A Save lost in a crash only
// makes the queue resend, never skip, so it need not sync.
type CursorStore interface {
	Load() (pos uint64, ok bool, err error)
	Save(pos uint64) error
}

// Persistent delivers a Source's items to one peer in order, at least
// once, across restarts: it sends one batch at a time, read from the
// Source at its cursor, and saves the cursor after each acknowledgement.
// The producer appends to the Source, then calls Notify.
type Persistent[T any] struct {
	peer  string
	src   Source[T]
	store CursorStore
	send  Sender[T]
	async AsyncSender[T] // pipelined.go: send is nil then
	depth int            // batches in flight at most (pipelined)
	cfg   Config[T]
	epoch uint64
	m     *peerMetrics

	ctx    context.Context
	cancel context.CancelFunc
	wake   chan struct{}
	done   chan struct{}

	mu  sync.Mutex
	pos uint64 // acknowledged position
}

// NewPersistent starts a queue for peer from the position store holds
// (start when it holds none). epoch names the Source's position space in
// every batch; give a new one when positions restart (a new log), so
// that receivers deduping by (epoch, position) start over. Keep and
// MaxItems do not apply: the Source decides what there is to send, and
// memory holds one batch.
func NewPersistent[T any](peer string, src Source[T], store CursorStore, send Sender[T], cfg Config[T], epoch, start uint64) (*Persistent[T], error) {
	p, err := newPersistent(peer, src, store, cfg, epoch, start)
	if err != nil {
		return nil, err
	}
	p.send = send
	go p.run()
	return p, nil
}

// newPersistent is a Persistent without its sender, not started.
func newPersistent[T any](peer string, src Source[T], store CursorStore, cfg Config[T], epoch, start uint64) (*Persistent[T], error) {
	pos, ok, err := store.Load()
	if err != nil {
		return nil, fmt.Errorf("peerqueue: load cursor of %s: %w", peer, err)
	}
	if !ok {
		pos = start
	}
	cfg = cfg.withDefaults()
	p := &Persistent[T]{peer: peer, src: src, store: store, cfg: cfg, epoch: epoch,
		m: cfg.Metrics.forPeer(peer), wake: make(chan struct{}, 1), done: make(chan struct{}), pos: pos}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	p.m.pending.Set(0)
	return p, nil
}

// Notify tells the queue that the Source has new items.
func (p *Persistent[T]) Notify() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// Cursor is the last acknowledged position.
func (p *Persistent[T]) Cursor() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pos
}

// Close stops the queue (an attempt in flight is aborted; nothing is
// lost: the next queue over the same store resends it).
func (p *Persistent[T]) Close() {
	p.cancel()
	p.m.gone()
}

// Wait waits until the sender goroutine returned (after Close).
func (p *Persistent[T]) Wait() { <-p.done }

func (p *Persistent[T]) run() {
	defer close(p.done)
	bo := backoff.New(p.cfg.BackoffMin, p.cfg.BackoffMax)
	pause := p.pauser(bo)
	pos := p.Cursor()
	for p.ctx.Err() == nil {
		items, next, err := p.src.Read(pos, p.cfg.MaxBatch)
		if err == nil && len(items) > 0 && next <= pos {
			err = fmt.Errorf("peerqueue: source read %d items at %d but returned next %d", len(items), pos, next)
		}
		if err != nil {
			if !pause("read", err) {
				return
			}
			continue
		}
		if len(items) == 0 {
			if next > pos { // a gap in the positions: nothing to send there
				p.advance(next)
				pos = next
				continue
			}
			select {
			case <-p.wake:
			case <-p.ctx.Done():
			}
			continue
		}
		p.m.pending.Set(float64(len(items)))
		b := Batch[T]{Peer: p.peer, Epoch: p.epoch, Seq: pos, Next: next, Items: items}
		if !p.deliver(b, pause) {
			return
		}
		bo.Reset()
		p.m.pending.Set(0)
		p.advance(next)
		pos = next
	}
}

// pauser is the run loops' retry pause: it waits bo's next delay;
// false when the queue closed first.
func (p *Persistent[T]) pauser(bo *backoff.Backoff) func(what string, err error) bool {
	return func(what string, err error) bool {
		d := bo.Next()
		p.cfg.Logger.Debug("peer queue: "+what+" failed; retrying", "peer", p.peer, "in", d, "error", err)
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
			return true
		case <-p.ctx.Done():
			return false
		}
	}
}

// deliver sends b until it is acknowledged (or refused for good); false
// when the queue closed first.
func (p *Persistent[T]) deliver(b Batch[T], pause func(string, error) bool) bool {
	for {
		ctx, cancel := context.WithTimeout(p.ctx, p.cfg.Timeout)
		err := p.send(ctx, b)
		cancel()
		switch {
		case err == nil:
			p.m.sent.Add(float64(len(b.Items)))
			p.m.batches.Inc()
			return true
		case IsPermanent(err):
			p.m.dropped(ReasonRefused, len(b.Items))
			p.cfg.Logger.Warn("peer refused a batch; given up", "peer", p.peer, "seq", b.Seq, "items", len(b.Items), "error", err)
			return true
		case p.ctx.Err() != nil:
			return false
		}
		p.m.retries.Inc()
		if !pause("send", err) {
			return false
		}
	}
}

// advance records next as acknowledged. A failed Save is logged and not
// retried: the position stays right in memory, and a restart that reads
// an older one resends, which is allowed.
func (p *Persistent[T]) advance(next uint64) {
	p.mu.Lock()
	p.pos = next
	p.mu.Unlock()
	if err := p.store.Save(next); err != nil {
		p.cfg.Logger.Warn("peer queue: saving the cursor failed", "peer", p.peer, "pos", next, "error", err)
	}
}
