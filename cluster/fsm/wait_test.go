package fsm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/testutil"
)

func TestWaitAppliedResultBeforeWaiter(t *testing.T) {
	f, _ := newFSM(t)
	release := f.RetainResults()
	f.Apply(entry(1, put("a", "1"), put("b", "2")))
	release()
	res, err := f.WaitApplied(context.Background(), 1)
	if err != nil || len(res) != 2 || res[0].Value != (Position{Index: 1}).Seq() || res[1].Value != (Position{Index: 1, Sub: 1}).Seq() {
		t.Fatalf("WaitApplied(1) = %+v, %v", res, err)
	}
	// Applied while nobody retained results: committed, but the values are gone.
	f.Apply(entry(2, put("c", "3")))
	if _, err := f.WaitApplied(context.Background(), 2); !errors.Is(err, ErrResultsLost) {
		t.Fatalf("unretained entry: %v, want ErrResultsLost", err)
	}
	// The ring keeps a bounded number of entries.
	release = f.RetainResults()
	defer release()
	for i := uint64(3); i < 3+resultRing+1; i++ {
		f.Apply(entry(i, put("k", "v")))
	}
	if _, err := f.WaitApplied(context.Background(), 3); !errors.Is(err, ErrResultsLost) {
		t.Fatalf("entry pushed out of the ring: %v", err)
	}
	if res, err := f.WaitApplied(context.Background(), 3+resultRing); err != nil || len(res) != 1 {
		t.Fatalf("latest entry: %+v, %v", res, err)
	}
}

func TestWaitAppliedWaiterBeforeResult(t *testing.T) {
	f, _ := newFSM(t)
	got := make(chan []Result, 2)
	errs := make(chan error, 2)
	for range 2 { // two waiters on one index both get it
		go func() {
			res, err := f.WaitApplied(context.Background(), 5)
			got <- res
			errs <- err
		}()
	}
	// Wait until both are registered, then apply an earlier entry first.
	waitersOn(t, f, 5, 2)
	f.Apply(entry(4, put("x", "1")))
	select {
	case r := <-got:
		t.Fatalf("woken by the wrong entry: %+v", r)
	default:
	}
	f.Apply(entry(5, Command{Type: 0xEE, Payload: []byte("?")}, put("y", "2")))
	for range 2 {
		res, err := <-got, <-errs
		if err != nil || len(res) != 2 || !errors.Is(res[0].Err, ErrUnknownCommand) || res[1].Err != nil {
			t.Fatalf("waiter got %+v, %v", res, err)
		}
	}
	f.wmu.Lock()
	defer f.wmu.Unlock()
	if len(f.w.waiters) != 0 {
		t.Fatalf("waiters left behind: %v", f.w.waiters)
	}
}

func TestWaitAppliedTimeoutAndRestore(t *testing.T) {
	f, _ := newFSM(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := f.WaitApplied(ctx, 9); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("timeout: %v", err)
	}
	f.wmu.Lock()
	left := len(f.w.waiters)
	f.wmu.Unlock()
	if left != 0 {
		t.Fatalf("timed-out waiter still registered")
	}

	// A snapshot restore that covers a waited-for index fails the waiter:
	// that entry will never be applied here.
	src, _ := newFSM(t)
	for i := uint64(1); i <= 12; i++ {
		src.Apply(entry(i, put("s", "v")))
	}
	snap := snapshotOf(t, src)
	errc := make(chan error, 1)
	go func() {
		_, err := f.WaitApplied(context.Background(), 10)
		errc <- err
	}()
	waitersOn(t, f, 10, 1)
	if err := f.Restore(io.NopCloser(bytes.NewReader(snap))); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, ErrResultsLost) {
			t.Fatalf("waiter after restore: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("waiter not released by the restore")
	}
	if _, err := f.WaitApplied(context.Background(), 11); !errors.Is(err, ErrResultsLost) {
		t.Fatalf("index covered by the snapshot: %v", err)
	}
}

// checkFor is testutil.CheckFor: poll until fn succeeds or fail after total.
var checkFor = testutil.CheckFor

func waitersOn(t testing.TB, f *FSM, index uint64, want int) {
	t.Helper()
	checkFor(t, 5*time.Second, time.Millisecond, func() error {
		f.wmu.Lock()
		defer f.wmu.Unlock()
		if n := len(f.w.waiters[index]); n != want {
			return fmt.Errorf("%d waiters on %d, want %d", n, index, want)
		}
		return nil
	})
}
