package push_test

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgechat/edgechat/bridge/push"
	"github.com/edgechat/edgechat/internal/snowflake"
	"github.com/edgechat/edgechat/internal/testutil"
)

// unackedRecords are the replicated records of deliveries connected
// devices did not acknowledge (services/push, CmdPushUnacked).
type unackedRecords struct {
	mu sync.Mutex
	m  map[string]bool // id/clientID
}

func (u *unackedRecords) Unacked(id snowflake.ID, clientID string) (bool, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.m[fmt.Sprint(id, "/", clientID)], nil
}

func (u *unackedRecords) record(id snowflake.ID, clientID string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.m == nil {
		u.m = map[string]bool{}
	}
	u.m[fmt.Sprint(id, "/", clientID)] = true
}

// A connected device waits for its acknowledgement: one reported
// unacknowledged is pushed at once, one not reported is held back as
// connected once the wait is over, and either way the message is done.
func TestSenderPushesAConnectedDeviceThatDidNotAcknowledge(t *testing.T) {
	w := newWorld()
	w.register("bob", "phone", push.Device{Platform: push.APNs, Token: "tok-halfopen"})
	w.register("bob", "tablet", push.Device{Platform: push.APNs, Token: "tok-acked"})
	w.connected["bob/phone"], w.connected["bob/tablet"] = true, true
	recs := &unackedRecords{}
	p := &scripted{}
	const ackTimeout = 200 * time.Millisecond
	s, reg := newSender(t, w, p, push.SenderConfig{Grace: 50 * time.Millisecond, AckTimeout: ackTimeout,
		ProgressEvery: 10 * time.Millisecond}, func(d *push.SenderDeps) { d.Unacked = recs })
	cancel, done := goRun(s)
	t.Cleanup(func() { cancel(); <-done })
	id := w.stage("bob", "into the lift")
	start := time.Now()
	s.Staged(id)
	testutil.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		if v, _ := testutil.MetricValue(t, reg, "edgechat_push_decisions_total", map[string]string{"verdict": "push"}); v != 0 {
			return fmt.Errorf("decided before the report: %v pushes", v)
		}
		if time.Since(start) < ackTimeout {
			return errors.New("within the bound")
		}
		return nil
	})
	recs.record(id, "bob/phone")
	s.Unacked(id)
	testutil.CheckFor(t, 2*time.Second, 5*time.Millisecond, func() error {
		if n := len(p.tries("tok-halfopen")); n != 1 {
			return fmt.Errorf("the unacknowledged phone pushed %d times", n)
		}
		return nil
	})
	if el := time.Since(start); el > ackTimeout+2*time.Second {
		t.Errorf("pushed %v after the commit: not at the report", el)
	}
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if w.queuedCount() != 0 {
			return errors.New("message still queued")
		}
		return nil
	})
	if n := len(p.tries("tok-acked")); n != 0 {
		t.Errorf("the tablet, never reported, pushed %d times", n)
	}
	if v, _ := testutil.MetricValue(t, reg, "edgechat_push_decisions_total", map[string]string{"verdict": "connected"}); v != 1 {
		t.Errorf("connected decisions = %v, want 1 (the tablet)", v)
	}
	if v, _ := testutil.MetricValue(t, reg, "edgechat_push_unacked_total", nil); v != 1 {
		t.Errorf("unacked = %v, want 1", v)
	}
	if n := len(p.tries("tok-halfopen")); n != 1 {
		t.Errorf("the phone pushed %d times", n)
	}
}

// A new leader that finds a message in the outbox with a device recorded
// unacknowledged (the old leader died before it pushed) pushes it once;
// the record of the push keeps a later leader from pushing it again.
func TestSenderNewLeaderPushesARecordedUnackedDeviceOnce(t *testing.T) {
	w := newWorld()
	w.register("bob", "phone", push.Device{Platform: push.APNs, Token: "tok-failover"})
	w.connected["bob/phone"] = true // still half-open
	recs := &unackedRecords{}
	id := w.stage("bob", "while the leader changed")
	recs.record(id, "bob/phone")
	cfg := push.SenderConfig{NoGrace: true, AckTimeout: time.Minute, ProgressEvery: 10 * time.Millisecond}
	p := &scripted{}
	for range 2 {
		s, _ := newSender(t, w, p, cfg, func(d *push.SenderDeps) { d.Unacked = recs })
		cancel, done := goRun(s)
		testutil.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
			if w.queuedCount() != 0 {
				return errors.New("message still queued")
			}
			return nil
		})
		cancel()
		<-done
		w.mu.Lock()
		w.queued[id] = true // as if the done record had not committed: only the handled one did
		w.handled[id] = []string{"bob/phone"}
		w.mu.Unlock()
	}
	if n := len(p.tries("tok-failover")); n != 1 {
		t.Fatalf("pushed %d times, want once", n)
	}
}

// countedUnacked are unackedRecords that count the sender's reads.
type countedUnacked struct {
	unackedRecords
	reads atomic.Int64
}

func (u *countedUnacked) Unacked(id snowflake.ID, clientID string) (bool, error) {
	u.reads.Add(1)
	return u.unackedRecords.Unacked(id, clientID)
}

// Messages whose connected devices wait for their acknowledgement wait in
// the term's schedule, not in a goroutine each: with 2,000 of them
// waiting the sender's goroutines stay as they were (before, one each
// until the ack deadline: 1,000 messages/s kept 8,000 goroutines and
// their timers). Each is still decided at its report or at the deadline.
func TestSenderWaitsForManyAcknowledgementsWithoutAGoroutineEach(t *testing.T) {
	const users, msgs, reported = 20, 2000, 10
	w := newWorld()
	for i := range users {
		uid := fmt.Sprintf("u%02d", i)
		w.register(uid, "phone", push.Device{Platform: push.APNs, Token: "tok-" + uid})
		w.connected[uid+"/phone"] = true
	}
	recs := &countedUnacked{}
	p := &scripted{}
	const ackTimeout = 6 * time.Second // the deadline is 3 s (ackSlack) later
	s, reg := newSender(t, w, p, push.SenderConfig{NoGrace: true, AckTimeout: ackTimeout,
		ProgressEvery: 10 * time.Millisecond}, func(d *push.SenderDeps) { d.Unacked = recs })
	base := runtime.NumGoroutine() // before the sender's own (a few, however many messages)
	cancel, done := goRun(s)
	t.Cleanup(func() { cancel(); <-done })
	start := time.Now()
	ids := make([]snowflake.ID, msgs)
	for i := range ids {
		ids[i] = w.stage(fmt.Sprintf("u%02d", i%users), "hello")
		s.Staged(ids[i])
	}
	testutil.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		if n := recs.reads.Load(); n < msgs {
			return fmt.Errorf("%d of %d devices decided to wait for their acknowledgement", n, msgs)
		}
		return nil
	})
	testutil.CheckFor(t, 2*time.Second, 10*time.Millisecond, func() error {
		if g := runtime.NumGoroutine(); g > base+50 {
			return fmt.Errorf("%d goroutines with %d messages waiting for acknowledgements, %d before they came", g, msgs, base)
		}
		return nil
	})
	if el := time.Since(start); el >= ackTimeout {
		t.Fatalf("the messages waited %v: past the bound before they were looked at", el)
	}
	if v, _ := testutil.MetricValue(t, reg, "edgechat_push_decisions_total", map[string]string{"verdict": "connected"}); v != 0 {
		t.Fatalf("%v devices decided before their acknowledgement's deadline", v)
	}
	// A few are reported unacknowledged: pushed at the report, once.
	for i, id := range ids[:reported] {
		recs.record(id, fmt.Sprintf("u%02d/phone", i%users))
		s.Unacked(id)
	}
	testutil.CheckFor(t, 2*time.Second, 5*time.Millisecond, func() error {
		if v, _ := testutil.MetricValue(t, reg, "edgechat_push_unacked_total", nil); v != reported {
			return fmt.Errorf("%v pushed as unacknowledged, want %d", v, reported)
		}
		return nil
	})
	if el := time.Since(start); el >= ackTimeout {
		t.Errorf("the reported devices decided %v after the commits: not at the report", el)
	}
	testutil.CheckFor(t, 15*time.Second, 20*time.Millisecond, func() error {
		if n := w.queuedCount(); n != 0 {
			return fmt.Errorf("%d messages still queued", n)
		}
		return nil
	})
	if el := time.Since(start); el < ackTimeout {
		t.Errorf("every message done %v after the commits, before the bound of %v", el, ackTimeout)
	}
	if v, _ := testutil.MetricValue(t, reg, "edgechat_push_decisions_total", map[string]string{"verdict": "connected"}); v != msgs-reported {
		t.Errorf("connected decisions = %v, want %d", v, msgs-reported)
	}
	pushes := 0
	for i := range users {
		pushes += len(p.tries(fmt.Sprintf("tok-u%02d", i)))
	}
	if pushes != reported {
		t.Errorf("%d pushes, want %d (the devices reported unacknowledged)", pushes, reported)
	}
}

// At its ack deadline, a device that acknowledged (never reported) is
// held back as connected on the one read of its report: the user's
// registrations were read at the plan and at the grace, and a third read
// (with the sign-in, mutes, do-not-disturb and read cursor) could decide
// nothing else. Three such reads per message were 5% of a node's CPU at
// 1,000 messages/s to connected devices (docs/perf/push.md). Held back
// even when the user read it meanwhile, it counts as connected.
func TestSenderHoldsBackAnAcknowledgedDeviceWithoutReadingItsUserAgain(t *testing.T) {
	w := newWorld()
	w.register("bob", "phone", push.Device{Platform: push.APNs, Token: "tok-phone"})
	w.register("carol", "phone", push.Device{Platform: push.APNs, Token: "tok-carol"})
	w.connected["bob/phone"], w.connected["carol/phone"] = true, true
	recs := &unackedRecords{}
	p := &scripted{}
	s, reg := newSender(t, w, p, push.SenderConfig{Grace: 50 * time.Millisecond, AckTimeout: 100 * time.Millisecond,
		ProgressEvery: 10 * time.Millisecond}, func(d *push.SenderDeps) { d.Unacked = recs })
	cancel, done := goRun(s)
	t.Cleanup(func() { cancel(); <-done })
	id := w.stage("bob", "seen on the phone")
	s.Staged(id)
	w.devicesRead(t, "bob", 2)
	w.mu.Lock()
	w.read["bob"] = id // read on the phone while its acknowledgement was awaited
	w.mu.Unlock()
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if w.queuedCount() != 0 {
			return errors.New("message still queued")
		}
		return nil
	})
	w.mu.Lock()
	reads := w.reads["bob"]
	w.mu.Unlock()
	if reads != 2 {
		t.Errorf("bob's devices read %d times for one message, want 2 (the plan, the grace)", reads)
	}
	if n := len(p.tries("tok-phone")); n != 0 {
		t.Errorf("the acknowledged phone pushed %d times", n)
	}
	if v, _ := testutil.MetricValue(t, reg, "edgechat_push_decisions_total", map[string]string{"verdict": "connected"}); v != 1 {
		t.Errorf("connected decisions = %v, want 1", v)
	}

	// Reported at the deadline, the device is decided on what is read
	// then, as at the grace: carol has read nothing, so she is pushed.
	id2 := w.stage("carol", "lost in the lift")
	s.Staged(id2)
	w.devicesRead(t, "carol", 2)
	recs.record(id2, "carol/phone") // recorded; its wake-up lost, the deadline finds it
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if n := len(p.tries("tok-carol")); n != 1 {
			return fmt.Errorf("carol's phone, reported, pushed %d times", n)
		}
		if w.queuedCount() != 0 {
			return errors.New("message still queued")
		}
		return nil
	})
}
