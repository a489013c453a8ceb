package peerqueue

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgechat/edgechat/internal/testutil"
)

// memLog is a Source: item i is at position i+1 (positions start at 1,
// as a Raft index would).
type memLog struct {
	mu    sync.Mutex
	items []int
	reads int
}

func (l *memLog) append(items ...int) {
	l.mu.Lock()
	l.items = append(l.items, items...)
	l.mu.Unlock()
}

func (l *memLog) Read(from uint64, max int) ([]int, uint64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.reads++
	i := int(from) - 1
	if i >= len(l.items) {
		return nil, from, nil
	}
	out := slices.Clone(l.items[i:min(len(l.items), i+max)])
	return out, from + uint64(len(out)), nil
}

// memCursor is a CursorStore that can refuse to save.
type memCursor struct {
	mu    sync.Mutex
	pos   uint64
	saved bool
	saves int
}

func (c *memCursor) Load() (uint64, bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pos, c.saved, nil
}

func (c *memCursor) Save(pos uint64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pos, c.saved = pos, true
	c.saves++
	return nil
}

func (c *memCursor) load() uint64 {
	pos, _, _ := c.Load()
	return pos
}

func TestPersistentDeliversInOrderAndSavesTheCursor(t *testing.T) {
	reg := prometheus.NewRegistry()
	src := &memLog{}
	cur := &memCursor{}
	p := &peer{fail: 2, lose: 1}
	q, err := NewPersistent[int]("apns", src, cur, p.send, fastConfig(t, reg), 7, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { q.Close(); q.Wait() }()
	src.append(seq(0, 8)...)
	q.Notify()
	waitReceived(t, p, seq(0, 8))
	testutil.CheckFor(t, waitFor, time.Millisecond, func() error {
		if c := cur.load(); c != 9 {
			return fmt.Errorf("cursor %d, want 9", c)
		}
		return nil
	})
	if q.Cursor() != 9 {
		t.Fatalf("Cursor = %d", q.Cursor())
	}
	p.mu.Lock()
	for _, b := range p.batches {
		if b.Epoch != 7 || b.Next-b.Seq != uint64(len(b.Items)) || int(b.Seq) != b.Items[0]+1 {
			t.Errorf("batch %+v: positions do not match the items", b)
		}
	}
	p.mu.Unlock()
	if s := metric(t, reg, "test_queue_sent_total", map[string]string{"peer": "apns"}); s != 8 {
		t.Fatalf("sent = %v, want 8", s)
	}
	// More later: Notify wakes the idle queue.
	src.append(8, 9)
	q.Notify()
	waitReceived(t, p, seq(0, 10))
}

// A crash between the send and the cursor's save: the next queue over the
// same store resends the unacknowledged batch and skips nothing.
func TestPersistentResumesAfterCrash(t *testing.T) {
	src := &memLog{}
	src.append(seq(0, 9)...)
	cur := &memCursor{}

	// First life: batches 0-2 and 3-5 are acknowledged; 6-8 reaches the
	// peer but the reply is lost, and the process dies.
	var mu sync.Mutex
	var firstLife []Batch[int]
	crashed := make(chan struct{})
	send1 := func(ctx context.Context, b Batch[int]) error {
		mu.Lock()
		firstLife = append(firstLife, b)
		mu.Unlock()
		if b.Seq >= 7 {
			select {
			case <-crashed:
			default:
				close(crashed)
			}
			<-ctx.Done() // hangs until the "crash"
			return ctx.Err()
		}
		return nil
	}
	q1, err := NewPersistent[int]("region-eu", src, cur, send1, fastConfig(t, nil), 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-crashed:
	case <-time.After(waitFor):
		t.Fatal("the third batch was never sent")
	}
	q1.Close()
	q1.Wait()
	if c := cur.load(); c != 7 {
		t.Fatalf("cursor after the crash = %d, want 7 (two batches acknowledged)", c)
	}

	// Second life, same store: starts with the unacknowledged batch.
	p := &peer{}
	q2, err := NewPersistent[int]("region-eu", src, cur, p.send, fastConfig(t, nil), 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { q2.Close(); q2.Wait() }()
	waitReceived(t, p, []int{6, 7, 8})
	p.mu.Lock()
	first := p.batches[0]
	p.mu.Unlock()
	if first.Seq != 7 || !slices.Equal(first.Items, []int{6, 7, 8}) {
		t.Fatalf("second life began with %+v, want the unacknowledged batch at 7", first)
	}
	testutil.CheckFor(t, waitFor, time.Millisecond, func() error {
		if c := cur.load(); c != 10 {
			return fmt.Errorf("cursor %d, want 10", c)
		}
		return nil
	})
}

func TestPersistentStartsAtStartWithoutACursor(t *testing.T) {
	src := &memLog{}
	src.append(seq(0, 5)...)
	p := &peer{}
	q, err := NewPersistent[int]("fcm", src, &memCursor{}, p.send, fastConfig(t, nil), 1, 4)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { q.Close(); q.Wait() }()
	waitReceived(t, p, []int{3, 4})
}

type failingCursor struct{}

func (failingCursor) Load() (uint64, bool, error) { return 0, false, errors.New("disk gone") }
func (failingCursor) Save(uint64) error           { return errors.New("disk gone") }

func TestPersistentRefusesAnUnreadableCursor(t *testing.T) {
	if _, err := NewPersistent[int]("x", &memLog{}, failingCursor{}, (&peer{}).send, fastConfig(t, nil), 1, 1); err == nil {
		t.Fatal("NewPersistent with an unreadable cursor succeeded")
	}
}

func TestBadgerCursor(t *testing.T) {
	dir := t.TempDir()
	open := func() *badger.DB {
		db, err := badger.Open(badger.DefaultOptions(dir).WithLogger(nil))
		if err != nil {
			t.Fatal(err)
		}
		return db
	}
	db := open()
	c := NewBadgerCursor(db, []byte("q/region-eu"))
	if _, ok, err := c.Load(); err != nil || ok {
		t.Fatalf("Load on an empty db = %v, %v", ok, err)
	}
	if err := c.Save(42); err != nil {
		t.Fatal(err)
	}
	if err := c.Save(1 << 60); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = open()
	defer db.Close()
	pos, ok, err := NewBadgerCursor(db, []byte("q/region-eu")).Load()
	if err != nil || !ok || pos != 1<<60 {
		t.Fatalf("Load after reopen = %d, %v, %v", pos, ok, err)
	}
	if err := db.Update(func(txn *badger.Txn) error { return txn.Set([]byte("bad"), []byte{1}) }); err != nil {
		t.Fatal(err)
	}
	if _, _, err := NewBadgerCursor(db, []byte("bad")).Load(); err == nil {
		t.Fatal("Load of a malformed cursor succeeded")
	}
}

// stuckLog returns items without moving the position on, until fixed.
type stuckLog struct {
	memLog
	fixed chan struct{}
}

func (l *stuckLog) Read(from uint64, max int) ([]int, uint64, error) {
	items, next, err := l.memLog.Read(from, max)
	select {
	case <-l.fixed:
	default:
		return items, from, err
	}
	return items, next, err
}

func TestPersistentRetriesASourceThatDoesNotAdvance(t *testing.T) {
	src := &stuckLog{fixed: make(chan struct{})}
	src.append(1, 2)
	p := &peer{}
	q, err := NewPersistent[int]("x", src, &memCursor{}, p.send, fastConfig(t, nil), 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { q.Close(); q.Wait() }()
	testutil.CheckFor(t, waitFor, time.Millisecond, func() error {
		src.mu.Lock()
		defer src.mu.Unlock()
		if src.reads < 3 {
			return fmt.Errorf("%d reads", src.reads)
		}
		return nil
	})
	if got := p.received(); len(got) != 0 {
		t.Fatalf("sent %v from a source that did not advance", got)
	}
	close(src.fixed)
	waitReceived(t, p, []int{1, 2})
}
