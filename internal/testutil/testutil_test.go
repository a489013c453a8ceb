package testutil

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// recorder is a testing.TB whose Fatalf records the message and ends the
// calling goroutine (as testing's does) without failing the real test, so
// that CheckFor's failure path can be checked.
type recorder struct {
	testing.TB
	mu     sync.Mutex
	failed string
}

func (r *recorder) Helper() {}

func (r *recorder) Fatalf(format string, args ...any) {
	r.mu.Lock()
	r.failed = fmt.Sprintf(format, args...)
	r.mu.Unlock()
	runtime.Goexit()
}

func TestCheckForReturnsOnceTrue(t *testing.T) {
	calls := 0
	CheckFor(t, 5*time.Second, time.Millisecond, func() error {
		calls++
		if calls < 3 {
			return errors.New("not yet")
		}
		return nil
	})
	if calls != 3 {
		t.Fatalf("fn called %d times, want 3", calls)
	}
}

func TestCheckForFailsWithLastError(t *testing.T) {
	r := &recorder{TB: t}
	calls := 0
	done := make(chan struct{})
	go func() { // Fatalf ends this goroutine
		defer close(done)
		CheckFor(r, 20*time.Millisecond, time.Millisecond, func() error {
			calls++
			return fmt.Errorf("attempt %d", calls)
		})
		t.Error("CheckFor returned although fn never succeeded")
	}()
	<-done
	if !strings.Contains(r.failed, fmt.Sprintf("attempt %d", calls)) || !strings.Contains(r.failed, "20ms") {
		t.Fatalf("failure %q does not carry the last error (attempt %d) and the total", r.failed, calls)
	}
	if calls < 2 {
		t.Fatalf("polled %d times in 20ms at 1ms", calls)
	}
}

func TestFakeClock(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	c := NewFakeClock(t0)
	if !c.Now().Equal(t0) {
		t.Fatalf("Now = %v, want %v", c.Now(), t0)
	}
	c.Advance(90 * time.Second)
	if got := c.Now().Sub(t0); got != 90*time.Second {
		t.Fatalf("after Advance: %v past start, want 90s", got)
	}
	c.Advance(-30 * time.Second)
	if got := c.Now().Sub(t0); got != time.Minute {
		t.Fatalf("after moving back: %v past start, want 1m", got)
	}
	t1 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	c.Set(t1)
	if !c.Now().Equal(t1) {
		t.Fatalf("after Set: %v, want %v", c.Now(), t1)
	}
}

func TestFakeClockConcurrent(t *testing.T) {
	c := NewFakeClock(time.Unix(0, 0))
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				c.Advance(time.Millisecond)
				_ = c.Now()
			}
		}()
	}
	wg.Wait()
	if got := c.Now().Sub(time.Unix(0, 0)); got != 800*time.Millisecond {
		t.Fatalf("clock moved %v, want 800ms", got)
	}
}

func TestSyncBuffer(t *testing.T) {
	var b SyncBuffer
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 50 {
				if n, err := b.Write([]byte("ab")); n != 2 || err != nil {
					t.Errorf("Write = %d, %v", n, err)
				}
			}
		}()
	}
	wg.Wait()
	if got := b.String(); got != strings.Repeat("ab", 200) {
		t.Fatalf("buffer holds %d bytes, want 400 of \"ab\"", len(got))
	}
}

func TestQuietLogger(t *testing.T) {
	l := QuietLogger()
	if l.Handler().Enabled(t.Context(), 12) {
		t.Fatal("quiet logger enabled for errors")
	}
	l.Error("dropped") // must not panic or print
}

func TestFakeClockTickersAndSleep(t *testing.T) {
	start := time.Unix(1_800_000_000, 0)
	c := NewFakeClock(start)
	tk := c.NewTicker(time.Second)
	c.Advance(999 * time.Millisecond)
	select {
	case <-tk.C():
		t.Fatal("ticked early")
	default:
	}
	c.Advance(5 * time.Second) // several due: one tick waits, the rest are dropped
	if got := <-tk.C(); !got.Equal(start.Add(time.Second)) {
		t.Fatalf("tick at %v, want the first due time", got)
	}
	select {
	case <-tk.C():
		t.Fatal("missed ticks were not dropped")
	default:
	}
	if c.LiveTickers() != 1 {
		t.Fatalf("LiveTickers = %d", c.LiveTickers())
	}
	tk.Stop()
	c.Advance(time.Hour)
	if c.LiveTickers() != 0 || len(tk.C()) != 0 {
		t.Fatal("a stopped ticker fired")
	}
	if err := c.Sleep(context.Background(), time.Minute); err != nil {
		t.Fatal(err)
	}
	if got := c.Slept(); len(got) != 1 || got[0] != time.Minute || !c.Now().Equal(start.Add(time.Hour+6*time.Second-time.Millisecond+time.Minute)) {
		t.Fatalf("Slept %v, now %v", got, c.Now().Sub(start))
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := c.Sleep(ctx, time.Minute); !errors.Is(err, context.Canceled) || len(c.Slept()) != 0 {
		t.Fatalf("Sleep on a done ctx = %v", err)
	}
}

func TestReceive(t *testing.T) {
	ch := make(chan int, 1)
	ch <- 7
	if got := Receive(t, ch, time.Second); got != 7 {
		t.Fatalf("Receive = %d", got)
	}
	r := &recorder{TB: t}
	done := make(chan struct{})
	go func() { // Fatalf ends this goroutine
		defer close(done)
		Receive(r, ch, 10*time.Millisecond)
		t.Error("Receive returned although nothing came")
	}()
	<-done
	if !strings.Contains(r.failed, "10ms") {
		t.Fatalf("failure %q does not say how long it waited", r.failed)
	}
}

func TestLaggingNode(t *testing.T) {
	var l LaggingNode
	applied := 0
	l.Hold(func() { applied++ })
	l.Hold(func() { applied++ })
	if applied != 0 {
		t.Fatal("applied before the barrier")
	}
	if err := l.Barrier(context.Background()); err != nil || applied != 2 {
		t.Fatalf("barrier: %v, applied %d", err, applied)
	}
	l.Hold(func() { applied++ })
	down := errors.New("no leader")
	l.SetDown(down)
	if err := l.Barrier(context.Background()); err != down || applied != 2 {
		t.Fatalf("down barrier: %v, applied %d", err, applied)
	}
	l.SetDown(nil)
	if err := l.Barrier(context.Background()); err != nil || applied != 3 {
		t.Fatalf("barrier after down: %v, applied %d", err, applied)
	}
	if l.Barriers() != 3 {
		t.Fatalf("barriers %d", l.Barriers())
	}
}
