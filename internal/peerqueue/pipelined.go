package peerqueue

import (
	"context"
	"fmt"
	"sync"

	"github.com/edgechat/edgechat/internal/backoff"
)

// A pipelined Persistent queue (NewPipelined) keeps several batches in
// flight: it reads ahead of its cursor and starts the next batch while
// earlier ones wait for their acknowledgement, so that an item appended
// while a batch is in flight goes out at once instead of a round trip
// later. The cursor still moves in order, past a batch only once it and
// every batch before it were acknowledged (or refused for good): nothing
// is skipped. When the oldest batch in flight fails, the queue abandons
// every batch in flight (their results are ignored), pauses with the
// backoff and starts again from the cursor, resending what may have
// arrived: the receiver dedupes by position (or by its own IDs).

// AsyncSender starts sending a batch to its peer: it writes the batch
// (in the order of the calls; it may block for flow control) and
// returns a wait function that blocks until the batch is acknowledged
// (nil), failed, or ctx ended; an error wrapped with Permanent gives the
// batch up, as for a Sender. An error of the call itself is the batch's
// failure (wait is not called then). ctx ends at the batch's timeout, or
// when the queue closes or abandons the batch; wait must return then.
// Items must not be kept after wait returned.
type AsyncSender[T any] func(ctx context.Context, b Batch[T]) (wait func() error, err error)

// NewPipelined is NewPersistent with up to depth batches in flight,
// started through send (depth < 1: 1). The cursor is saved by a
// goroutine of its own, the latest acknowledged position each time (a
// slow store delays the saves, not the sending); Wait returns after its
// last save and after every wait function returned (they must return
// once their ctx ends).
func NewPipelined[T any](peer string, src Source[T], store CursorStore, send AsyncSender[T], cfg Config[T], epoch, start uint64, depth int) (*Persistent[T], error) {
	p, err := newPersistent(peer, src, store, cfg, epoch, start)
	if err != nil {
		return nil, err
	}
	p.async, p.depth = send, max(depth, 1)
	go p.runPipelined()
	return p, nil
}

// flight is one batch started and not yet taken by the run loop.
type flight[T any] struct {
	b      Batch[T]
	res    chan error // its wait's result; buffered: never blocks
	cancel context.CancelFunc
}

func (p *Persistent[T]) runPipelined() {
	saved := make(chan struct{})
	kick := make(chan struct{}, 1)
	stop := make(chan struct{})
	from := p.Cursor()
	go func() { defer close(saved); p.saver(from, kick, stop) }()
	var q []*flight[T]
	var waits sync.WaitGroup // every wait returns (ctx ends) before Wait does
	defer func() {
		for _, f := range q {
			f.cancel()
		}
		waits.Wait()
		close(stop)
		<-saved
		close(p.done)
	}()

	bo := backoff.New(p.cfg.BackoffMin, p.cfg.BackoffMax)
	pause := p.pauser(bo)
	advance := func(next uint64) {
		p.mu.Lock()
		p.pos = next
		p.mu.Unlock()
		select {
		case kick <- struct{}{}:
		default:
		}
	}
	pending := 0 // items in flight
	// add queues a batch whose result is known (a gap, a failed start).
	add := func(b Batch[T], err error) {
		f := &flight[T]{b: b, res: make(chan error, 1), cancel: func() {}}
		f.res <- err
		q = append(q, f)
	}
	// start sends b and queues it; false when it failed to start (then
	// nothing more is started until the queue is empty again).
	start := func(b Batch[T]) bool {
		ctx, cancel := context.WithTimeout(p.ctx, p.cfg.Timeout)
		wait, err := p.async(ctx, b)
		if err != nil {
			cancel()
			add(b, err)
			return IsPermanent(err)
		}
		f := &flight[T]{b: b, res: make(chan error, 1), cancel: cancel}
		waits.Add(1)
		go func() {
			defer waits.Done()
			err := wait()
			cancel()
			f.res <- err
		}()
		q = append(q, f)
		return true
	}

	cursor := p.Cursor()
	read := cursor   // the next position to read
	stalled := false // a start failed: wait for what is in flight
	for p.ctx.Err() == nil {
		var readErr error
		for !stalled && len(q) < p.depth && p.ctx.Err() == nil {
			items, next, err := p.src.Read(read, p.cfg.MaxBatch)
			if err == nil && len(items) > 0 && next <= read {
				err = fmt.Errorf("peerqueue: source read %d items at %d but returned next %d", len(items), read, next)
			}
			if err != nil {
				readErr = err
				break
			}
			if len(items) == 0 {
				if next > read { // a gap in the positions: nothing to send there
					add(Batch[T]{Peer: p.peer, Epoch: p.epoch, Seq: read, Next: next}, nil)
					read = next
					continue
				}
				break
			}
			pending += len(items)
			p.m.pending.Set(float64(pending))
			stalled = !start(Batch[T]{Peer: p.peer, Epoch: p.epoch, Seq: read, Next: next, Items: items})
			read = next
		}
		if len(q) == 0 {
			stalled = false
			if readErr != nil {
				if !pause("read", readErr) {
					return
				}
				continue
			}
			select {
			case <-p.wake:
			case <-p.ctx.Done():
			}
			continue
		}
		select {
		case err := <-q[0].res:
			f := q[0]
			q = q[1:]
			n := len(f.b.Items)
			switch {
			case err == nil:
				if n > 0 {
					p.m.sent.Add(float64(n))
					p.m.batches.Inc()
				}
			case IsPermanent(err):
				p.m.dropped(ReasonRefused, n)
				p.cfg.Logger.Warn("peer refused a batch; given up", "peer", p.peer, "seq", f.b.Seq, "items", n, "error", err)
			case p.ctx.Err() != nil:
				return
			default:
				// Abandon what is in flight and start again from the
				// cursor: the batches after a failed one may have
				// failed too, or arrived (the receiver dedupes).
				p.m.retries.Inc()
				for _, f := range q {
					f.cancel()
				}
				q, stalled, pending, read = nil, false, 0, cursor
				p.m.pending.Set(0)
				if !pause("send", err) {
					return
				}
				continue
			}
			bo.Reset()
			pending -= n
			p.m.pending.Set(float64(pending))
			cursor = f.b.Next
			advance(cursor)
		case <-p.wake:
		case <-p.ctx.Done():
			return
		}
	}
}

// saver saves the acknowledged position (from at first) whenever
// kicked, the latest one each time, and once more when stop is closed.
func (p *Persistent[T]) saver(from uint64, kick <-chan struct{}, stop <-chan struct{}) {
	last := from
	for {
		final := false
		select {
		case <-kick:
		case <-stop:
			final = true
		}
		if pos := p.Cursor(); pos != last {
			if err := p.store.Save(pos); err != nil {
				p.cfg.Logger.Warn("peer queue: saving the cursor failed", "peer", p.peer, "pos", pos, "error", err)
			}
			last = pos
		}
		if final {
			return
		}
	}
}
