package workpool

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/testutil"
)

func TestTasksRunAndWorkersAreReused(t *testing.T) {
	p := New(context.Background(), time.Minute)
	var wg sync.WaitGroup
	for range 100 {
		wg.Add(1)
		p.Go(wg.Done)
		wg.Wait() // one at a time
	}
	// A task can come before the worker that ran the last one is back
	// waiting, which starts another: how often is the scheduler's call
	// (59 of 100 in a loaded CI run under -race, 1 on a quiet
	// machine). A pool that never reused a worker starts 100.
	if p.Started() >= 100 {
		t.Fatalf("100 tasks one after another started %d workers, want fewer", p.Started())
	}
}

func TestBlockedTaskDoesNotHoldOthers(t *testing.T) {
	p := New(context.Background(), time.Minute)
	release := make(chan struct{})
	p.Go(func() { <-release })
	ran := make(chan struct{})
	p.Go(func() { close(ran) })
	testutil.Receive(t, ran, 10*time.Second) // not held by the blocked task
	close(release)
	if p.Started() != 2 {
		t.Fatalf("started %d workers, want 2", p.Started())
	}
}

func TestIdleWorkersStop(t *testing.T) {
	p := New(context.Background(), 20*time.Millisecond)
	var wg sync.WaitGroup
	release := make(chan struct{})
	for range 5 {
		wg.Add(1)
		p.Go(func() { defer wg.Done(); <-release })
	}
	close(release)
	wg.Wait()
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if n := p.Live(); n != 0 {
			return fmt.Errorf("%d workers still live", n)
		}
		return nil
	})
}

func TestWorkersStopWithContextAndTasksStillRun(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	p := New(ctx, time.Hour)
	done := make(chan struct{})
	p.Go(func() { close(done) })
	<-done
	cancel()
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if n := p.Live(); n != 0 {
			return fmt.Errorf("%d workers live after the context ended", n)
		}
		return nil
	})
	ran := make(chan struct{})
	p.Go(func() { close(ran) })
	testutil.Receive(t, ran, 10*time.Second) // runs after the context ended
}

// deep uses about n KB of stack.
//
//go:noinline
func deep(n int) byte {
	var buf [1000]byte
	buf[n%len(buf)] = byte(n)
	if n == 0 {
		return buf[0]
	}
	return deep(n-1) + buf[n%len(buf)]
}

var sink byte

// A task that needs ~32 KB of stack, on a fresh goroutine each time (the
// goroutine grows its stack every time) and on the pool.
func BenchmarkDeepTask(b *testing.B) {
	b.Run("goroutine", func(b *testing.B) {
		var wg sync.WaitGroup
		for b.Loop() {
			wg.Add(1)
			go func() { sink = deep(32); wg.Done() }()
			wg.Wait()
		}
	})
	b.Run("pool", func(b *testing.B) {
		p := New(b.Context(), time.Minute)
		var wg sync.WaitGroup
		for b.Loop() {
			wg.Add(1)
			p.Go(func() { sink = deep(32); wg.Done() })
			wg.Wait()
		}
	})
}
