package presence

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/cluster/fsm/fsmtest"
	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/internal/wire"
)

const seenEvery = time.Minute

// newStoreHarness is a running service whose last seen is written through
// a single-node Raft log in front of a real FSM (fsmtest), carol's
// account being deleted.
func newStoreHarness(t *testing.T) (*harness, *fsmtest.Harness) {
	t.Helper()
	fh := fsmtest.New(t)
	h := &harness{t: t, clk: newTestClock(), pub: &recorder{}}
	s, err := New(Config{Interval: interval, Grace: grace, SeenEvery: seenEvery}, Deps{
		Publisher: h.pub,
		Logger:    testutil.QuietLogger(),
		Clock:     h.clk,
		Store: Store{DB: fh.DB, FSM: fh.FSM, Proposer: fh,
			Deleted: func(_ *badger.Txn, uid string) (bool, error) { return uid == "carol", nil }},
	})
	if err != nil {
		t.Fatal(err)
	}
	h.s = s
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	// Run's two tickers: the demotions' and the last seen writer's.
	testutil.CheckFor(t, 5*time.Second, time.Millisecond, func() error {
		if n := h.clk.LiveTickers(); n != 2 {
			return errors.New("the service's tickers are not running yet")
		}
		return nil
	})
	return h, fh
}

// A user going offline is published at once even while the write of
// their last seen to the replicated state cannot commit (no leader: the
// proposal waits, then fails); the write is retried and catches up once
// the cluster commits again.
func TestPresenceWorksWhileLastSeenCannotCommit(t *testing.T) {
	h, fh := newStoreHarness(t)
	// The first write hangs as a proposal waiting for a leader does.
	entered, release := make(chan struct{}), make(chan struct{})
	var releaseOnce sync.Once
	releaseWrite := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(releaseWrite) // before the harness stops the service: a failed test must not hang on it
	fh.BeforeNext(func() { close(entered); <-release })

	h.s.Connected("alice", "a1")
	h.s.Disconnected("alice", "a1")
	h.advance(grace)
	aliceSeen := h.s.Status("alice").LastSeen
	testutil.Receive(t, entered, 5*time.Second) // alice's write waits for a quorum now

	// Meanwhile presence goes on: bob comes and goes, published at once.
	h.s.Connected("bob", "b1")
	h.advance(time.Second)
	h.s.Disconnected("bob", "b1")
	h.advance(grace)
	// The service's own ticker, which the test clock drives too, may
	// publish a demotion a moment after the test's tick: each user's
	// publishes in order, the users' interleaving either way.
	testutil.CheckFor(t, 5*time.Second, time.Millisecond, func() error {
		got := h.pub.statuses(t)
		byUser := map[string][]string{}
		for _, st := range got {
			uid, _, _ := strings.Cut(st, ":")
			byUser[uid] = append(byUser[uid], st)
		}
		if len(got) != 4 || fmt.Sprint(byUser["alice"]) != "[alice:online alice:offline]" || fmt.Sprint(byUser["bob"]) != "[bob:online bob:offline]" {
			return fmt.Errorf("publishes %v", got)
		}
		return nil
	})
	bobSeen := h.s.Status("bob").LastSeen
	if bobSeen.IsZero() || !bobSeen.After(aliceSeen) {
		t.Fatalf("bob last seen %v, alice %v", bobSeen, aliceSeen)
	}

	// The cluster is down: alice's write and bob's fail.
	fh.SetErr(fsmtest.ErrDown)
	releaseWrite()
	testutil.CheckFor(t, 5*time.Second, time.Millisecond, func() error {
		if failed := testutil.CounterValue(t, h.s.seen.mFailed); failed < 1 {
			return errors.New("no failed write yet")
		}
		return nil
	})
	if got := h.s.storedSeen("bob"); !got.IsZero() {
		t.Fatalf("bob stored %v while the cluster is down", got)
	}

	// Back: the next round writes what is left.
	fh.SetErr(nil)
	h.advance(seenEvery)
	testutil.CheckFor(t, 5*time.Second, time.Millisecond, func() error {
		for uid, want := range map[string]time.Time{"alice": aliceSeen, "bob": bobSeen} {
			if got := h.s.storedSeen(uid); !got.Equal(want) {
				return errors.New(uid + " stored " + got.String() + ", want " + want.String())
			}
		}
		return nil
	})
}

// Online users' last seen is written every SeenEvery, not on each
// heartbeat; a record never goes back; a deleted account's is not
// written; an erased account's is deleted.
func TestLastSeenRecords(t *testing.T) {
	h, fh := newStoreHarness(t)
	h.s.Connected("alice", "a1")
	h.s.Heartbeat("alice")
	if got := h.s.storedSeen("alice"); !got.IsZero() {
		t.Fatalf("alice stored %v before any round", got)
	}
	h.advance(30 * time.Second)
	h.s.Heartbeat("alice")
	beat := publicTime(h.clk.Now())
	h.advance(seenEvery - 30*time.Second)
	testutil.CheckFor(t, 5*time.Second, time.Millisecond, func() error {
		if got := h.s.storedSeen("alice"); !got.Equal(beat) {
			return errors.New("alice stored " + got.String() + ", want " + beat.String())
		}
		return nil
	})

	// An older write (from a former home) does not move it back.
	write := func(uid string, at time.Time) {
		t.Helper()
		payload := []byte(`{"v":1,"seen":[{"u":"` + uid + `","t":` + strconv.FormatInt(at.Unix(), 10) + `}]}`)
		if _, err := fh.Propose(context.Background(), wire.CmdPresenceSeen, payload); err != nil {
			t.Fatal(err)
		}
	}
	write("alice", beat.Add(-time.Hour))
	if got := h.s.storedSeen("alice"); !got.Equal(beat) {
		t.Fatalf("alice stored %v after an older write, want %v", got, beat)
	}
	// carol's account is deleted: nothing is written.
	write("carol", beat)
	if got := h.s.storedSeen("carol"); !got.IsZero() {
		t.Fatalf("deleted carol stored %v", got)
	}
	// Erasing alice deletes her record.
	err := fh.DB.Update(func(tx *badger.Txn) error {
		done, after, err := h.s.EraseAccount(tx, "alice", fsm.NewBudget(10))
		if err == nil && (!done || after == nil) {
			err = errors.New("erase step not done")
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := h.s.storedSeen("alice"); !got.IsZero() {
		t.Fatalf("erased alice stored %v", got)
	}
}

// restoringMap is a retained store that takes back copies (the broker's
// RestoreRetained: only where nothing is retained).
type restoringMap struct {
	mu sync.Mutex
	m  map[string][]byte
}

func (r *restoringMap) Retained(topic string) ([]byte, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p, ok := r.m[topic]
	return p, ok
}

func (r *restoringMap) EachRetained(fn func(topic string, payload []byte)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for t, p := range r.m {
		fn(t, p)
	}
}

func (r *restoringMap) RestoreRetained(topic string, payload []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.m[topic]; !ok {
		r.m[topic] = payload
	}
	return nil
}

// A node starting on a state with stored last seen (a restart of the
// whole cluster: nothing retained anywhere) retains presence/{uid}
// offline with it for the users it retains nothing of, and leaves a
// copy it has alone.
func TestStoredLastSeenIsRetainedAtStart(t *testing.T) {
	fh := fsmtest.New(t)
	online, _ := json.Marshal(wire.Presence{Status: wire.StatusOnline, LastSeen: time.Date(2026, 11, 28, 11, 59, 0, 0, time.UTC)})
	store := &restoringMap{m: map[string][]byte{"presence/bob": online}}
	s, err := New(Config{Interval: interval, Grace: grace}, Deps{
		Publisher: &recorder{}, Logger: testutil.QuietLogger(), Clock: newTestClock(), Retained: store,
		Store: Store{DB: fh.DB, FSM: fh.FSM, Proposer: fh},
	})
	if err != nil {
		t.Fatal(err)
	}
	aliceSeen := time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)
	payload := []byte(`{"v":1,"seen":[{"u":"alice","t":` + strconv.FormatInt(aliceSeen.Unix(), 10) +
		`},{"u":"bob","t":` + strconv.FormatInt(aliceSeen.Unix(), 10) + `}]}`)
	if _, err := fh.Propose(context.Background(), wire.CmdPresenceSeen, payload); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() { cancel(); <-done }()
	testutil.CheckFor(t, 5*time.Second, time.Millisecond, func() error {
		p, ok := store.Retained("presence/alice")
		if !ok {
			return errors.New("nothing retained for alice")
		}
		var got wire.Presence
		if err := json.Unmarshal(p, &got); err != nil {
			return err
		}
		if got.Status != wire.StatusOffline || !got.LastSeen.Equal(aliceSeen) {
			return errors.New("alice retained " + string(p))
		}
		return nil
	})
	if p, _ := store.Retained("presence/bob"); string(p) != string(online) {
		t.Fatalf("bob's copy replaced by %s", p)
	}
}

// An account erased while its user is still tracked (erased at once,
// its connections closed a moment ago and their grace running) leaves
// nothing: no offline is published (retaining its last seen again)
// afterwards, and no last seen is answered.
func TestErasureForgetsATrackedUser(t *testing.T) {
	h, fh := newStoreHarness(t)
	h.s.Connected("alice", "a1")
	h.s.Disconnected("alice", "a1") // the grace runs
	var after func()
	err := fh.DB.Update(func(tx *badger.Txn) error {
		var err error
		_, after, err = h.s.EraseAccount(tx, "alice", fsm.NewBudget(10))
		return err
	})
	if err != nil || after == nil {
		t.Fatalf("erase: %v", err)
	}
	after()
	h.advance(grace + interval*offlineAfter)
	h.expect("alice:online")
	if p := h.s.Status("alice"); !p.LastSeen.IsZero() {
		t.Fatalf("erased alice answers last seen %v", p.LastSeen)
	}
}
