// Package workpool runs short tasks on goroutines that outlive a task.
//
// A goroutine starts with a small stack, and a task that needs a deep
// one (an MQTT publish path: hooks, encoding, delivery) grows and copies
// it several times before it can run. When such a task runs per message
// on a fresh goroutine, that copying was 3-6% of a node's CPU (broker's
// answerers, docs/perf/cluster.md). A pool worker keeps its grown stack
// from one task to the next (the garbage collector may shrink an idle
// one, halving it at most once per cycle), and goes away after it has
// been idle for a while, so an idle server keeps no workers.
package workpool

import (
	"context"
	"sync/atomic"
	"time"
)

// Pool hands tasks to idle workers and starts a worker when none is idle,
// so a task never waits for another one to finish: tasks may block.
type Pool struct {
	work    chan func()
	idle    time.Duration
	done    <-chan struct{}
	started atomic.Int64
	live    atomic.Int64
}

// New is a pool whose workers stop after idle without a task, or when ctx
// ends. Tasks given after ctx ended still run, each on a goroutine of its
// own.
func New(ctx context.Context, idle time.Duration) *Pool {
	return &Pool{work: make(chan func()), idle: idle, done: ctx.Done()}
}

// Go runs f on an idle worker, or on a new one.
func (p *Pool) Go(f func()) {
	select {
	case p.work <- f:
	default:
		p.started.Add(1)
		p.live.Add(1)
		go p.worker(f)
	}
}

func (p *Pool) worker(f func()) {
	defer p.live.Add(-1)
	f()
	t := time.NewTimer(p.idle)
	defer t.Stop()
	for {
		select {
		case f = <-p.work:
			f()
			t.Reset(p.idle)
		case <-t.C:
			return
		case <-p.done:
			return
		}
	}
}

// Started is how many workers the pool has started so far.
func (p *Pool) Started() int64 { return p.started.Load() }

// Live is how many workers are running or idle now.
func (p *Pool) Live() int64 { return p.live.Load() }
