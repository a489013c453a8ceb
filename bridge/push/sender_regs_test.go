package push_test

import (
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgechat/edgechat/bridge/push"
	"github.com/edgechat/edgechat/internal/snowflake"
	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/internal/wire"
)

// The registrations a push goes to are those at the end of the grace
// period (and before each retry), not those read when it was planned.

// devicesRead waits until the sender has read uid's registrations n
// times (the plan reads them once).
func (w *world) devicesRead(t *testing.T, uid string, n int) {
	t.Helper()
	testutil.CheckFor(t, 10*time.Second, 2*time.Millisecond, func() error {
		w.mu.Lock()
		defer w.mu.Unlock()
		if w.reads[uid] < n {
			return fmt.Errorf("%s's devices read %d times", uid, w.reads[uid])
		}
		return nil
	})
}

func (w *world) outboxEmpty(t *testing.T) {
	t.Helper()
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if n := w.queuedCount(); n != 0 {
			return fmt.Errorf("%d messages still queued", n)
		}
		return nil
	})
}

// planThenGrace stages a message to bob heard at its commit (planned at
// once, with bob's devices as they are) and waits for that plan; the
// decision at the end of the grace period reads bob's devices only once
// changed is called.
func planThenGrace(t *testing.T, w *world, p push.Provider, body string) (changed func()) {
	t.Helper()
	changed = w.holdReads("bob")
	t.Cleanup(changed)
	id := w.stage("bob", body)
	s, _ := startSender(t, w, p, push.SenderConfig{Grace: 700 * time.Millisecond})
	s.Staged(id)
	w.devicesRead(t, "bob", 1)
	return changed
}

// bob's phone changes hands during the grace period: carol registers its
// token, which moves it out of bob's registrations. bob's message must
// not reach the phone that is carol's now.
func TestAPushGoesOnlyToADeviceStillRegisteredAtTheEndOfTheGrace(t *testing.T) {
	w := newWorld()
	w.register("bob", "phone", push.Device{Platform: push.APNs, Token: "tok-phone"})
	p := &scripted{}
	changed := planThenGrace(t, w, p, "bob's secret")
	w.mu.Lock()
	delete(w.devices, "bob")
	w.mu.Unlock()
	w.register("carol", "phone", push.Device{Platform: push.APNs, Token: "tok-phone"})
	changed()
	w.outboxEmpty(t)
	if n := len(p.tries("tok-phone")); n != 0 {
		t.Fatalf("bob's message pushed %d times to a token carol holds now", n)
	}
}

// A device that registers a new token under the same device ID during the
// grace period (an app reinstalled, an FCM token rotated) is pushed at
// the new token: it is still the user's device, and the old token may be
// someone else's by now.
func TestAPushGoesToTheTokenTheDeviceHoldsAtTheEndOfTheGrace(t *testing.T) {
	w := newWorld()
	w.register("bob", "phone", push.Device{Platform: push.APNs, Token: "tok-old"})
	p := &scripted{}
	changed := planThenGrace(t, w, p, "hi")
	w.mu.Lock()
	w.devices["bob"][0].Device.Token = "tok-new"
	w.mu.Unlock()
	changed()
	w.outboxEmpty(t)
	if o, n := len(p.tries("tok-old")), len(p.tries("tok-new")); o != 0 || n != 1 {
		t.Fatalf("pushed %d times to the old token and %d to the new one, want 0 and 1", o, n)
	}
}

// failOnce answers RetryLater to the first attempt of every token.
func failOnce() *scripted {
	return &scripted{answer: func(_ push.Device, attempt int) (push.Result, error) {
		if attempt == 1 {
			return push.Result{Outcome: push.RetryLater, Status: 503}, push.ErrRetryLater
		}
		return push.Result{Outcome: push.Delivered, Status: 200}, nil
	}}
}

// A retry is decided again before it is sent: what would have held the
// push back at the end of the grace period stops it.
func TestARetryIsDecidedAgainBeforeItIsSent(t *testing.T) {
	for name, change := range map[string]func(w *world){
		"signed out": func(w *world) { delete(w.devices, "bob") },
		"token moved": func(w *world) {
			delete(w.devices, "bob")
			w.devices["carol"] = []push.Registered{{Name: "phone", Device: push.Device{Platform: push.APNs, Token: "tok-phone"}}}
		},
		"read":      func(w *world) { w.read["bob"] = 1 << 62 },
		"muted":     func(w *world) { w.mutes["bob"] = []push.Mute{{Conversation: "user:alice"}} },
		"connected": func(w *world) { w.connected["bob/phone"] = true },
	} {
		t.Run(name, func(t *testing.T) {
			w := newWorld()
			w.register("bob", "phone", push.Device{Platform: push.APNs, Token: "tok-phone"})
			p := failOnce()
			w.stage("bob", "hi")
			startSender(t, w, p, push.SenderConfig{NoGrace: true, RetryMin: 400 * time.Millisecond, RetryMax: 400 * time.Millisecond})
			testutil.CheckFor(t, 10*time.Second, 2*time.Millisecond, func() error {
				if len(p.tries("tok-phone")) == 0 {
					return errors.New("not tried yet")
				}
				return nil
			})
			w.mu.Lock()
			change(w)
			w.mu.Unlock()
			w.outboxEmpty(t)
			if n := len(p.tries("tok-phone")); n != 1 {
				t.Fatalf("tried %d times; the retry should have been stopped", n)
			}
		})
	}
}

// A dead-token answer is judged on the registration as it is when the
// answer comes: one registered again since the provider saw the token
// dead stays.
func TestADeadTokenRegisteredAgainMeanwhileIsKept(t *testing.T) {
	w := newWorld()
	w.register("bob", "phone", push.Device{Platform: push.APNs, Token: "tok-phone"}) // UpdatedAt 1970
	p := &scripted{answer: func(push.Device, int) (push.Result, error) {
		// The app registers the token again while APNs answers for an
		// old invalidation.
		w.mu.Lock()
		w.devices["bob"][0].UpdatedAt = time.Now()
		w.mu.Unlock()
		return push.Result{Outcome: push.DeadToken, Status: 410, Reason: "Unregistered",
			InvalidSince: time.Now().Add(-time.Hour)}, push.ErrDeadToken
	}}
	w.stage("bob", "hi")
	startSender(t, w, p, push.SenderConfig{NoGrace: true})
	w.outboxEmpty(t)
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.removed) != 0 {
		t.Fatalf("removed %q, a registration refreshed after the provider saw it dead", w.removed)
	}
}

// runSender runs a sender over w until stop, which returns once its
// term is over and its last progress recorded (a leader that stepped
// down).
func runSender(t *testing.T, w *world, p push.Provider, cfg push.SenderConfig) (stop func()) {
	t.Helper()
	_, _, stop = launchSender(t, w, p, cfg)
	t.Cleanup(stop)
	return stop
}

// A device held back at the end of the grace period (here: connected, it
// got the message over MQTT) is not pushed later by the next leader,
// while a sibling device's push is still being retried when the leader
// changes.
func TestADeviceHeldBackIsNotPushedByTheNextLeader(t *testing.T) {
	w := newWorld()
	w.register("bob", "phone", push.Device{Platform: push.APNs, Token: "tok-phone"})
	w.register("bob", "tablet", push.Device{Platform: push.APNs, Token: "tok-tablet"})
	w.connected["bob/phone"] = true
	var down atomic.Bool
	down.Store(true)
	p := &scripted{answer: func(d push.Device, _ int) (push.Result, error) {
		if d.Token == "tok-tablet" && down.Load() {
			return push.Result{Outcome: push.RetryLater, Status: 503}, push.ErrRetryLater
		}
		return push.Result{Outcome: push.Delivered, Status: 200}, nil
	}}
	w.stage("bob", "hi")
	cfg := push.SenderConfig{NoGrace: true, RetryMin: time.Second, RetryMax: time.Second, MaxAttempts: 100}
	stop := runSender(t, w, p, cfg)
	testutil.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		if len(p.tries("tok-tablet")) == 0 {
			return errors.New("tablet not tried yet")
		}
		return nil
	})
	stop() // the leader steps down while the tablet waits for its retry
	// The phone disconnects; the provider is back; another node leads.
	w.mu.Lock()
	delete(w.connected, "bob/phone")
	w.mu.Unlock()
	down.Store(false)
	runSender(t, w, p, cfg)
	w.outboxEmpty(t)
	if n := len(p.tries("tok-phone")); n != 0 {
		t.Errorf("the phone was held back (connected at the end of the grace period) and pushed %d times after a leader change", n)
	}
	if n := len(p.tries("tok-tablet")); n < 2 {
		t.Errorf("the tablet was tried %d times", n)
	}
}

// During a provider outage the pushes waiting for their retry count
// against MaxQueue with the queued ones: past it the oldest are given up
// (overflow) and their messages leave the outbox, rather than waiting
// retries piling up without bound.
func TestRetriesWaitingAreBoundedWithTheQueue(t *testing.T) {
	w := newWorld()
	const n, bound = 60, 10
	p := &scripted{answer: func(push.Device, int) (push.Result, error) {
		return push.Result{Outcome: push.RetryLater, Status: 503}, push.ErrRetryLater
	}}
	s, reg := startSender(t, w, p, push.SenderConfig{NoGrace: true, MaxQueue: bound, RetryMin: time.Hour, RetryMax: time.Hour})
	var ids []snowflake.ID
	for i := range n {
		uid := fmt.Sprint("u", i)
		tok := fmt.Sprint("tok", i)
		w.register(uid, "phone", push.Device{Platform: push.APNs, Token: tok})
		ids = append(ids, w.stage(uid, "hi"))
		s.Staged(ids[i])
		// One at a time, so that the queue itself never overflows.
		testutil.CheckFor(t, 10*time.Second, time.Millisecond, func() error {
			if len(p.tries(tok)) == 0 {
				return fmt.Errorf("%s not tried", tok)
			}
			return nil
		})
	}
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if q := w.queuedCount(); q != bound {
			return fmt.Errorf("%d messages in the outbox, want the %d whose retry waits", q, bound)
		}
		return nil
	})
	w.mu.Lock()
	for _, id := range ids[n-bound:] {
		if !w.queued[id] {
			t.Errorf("message %d of the newest %d was given up", id, bound)
		}
	}
	w.mu.Unlock()
	if v, _ := testutil.MetricValue(t, reg, "edgechat_push_given_up_total", map[string]string{"reason": "overflow"}); v != n-bound {
		t.Errorf("given up (overflow) = %v, want %d", v, n-bound)
	}
	if v, _ := testutil.MetricValue(t, reg, "edgechat_push_retry_waiting", map[string]string{"provider": "apns"}); v != bound {
		t.Errorf("retries waiting = %v, want %d", v, bound)
	}
}

// failingGroups is a directory whose groups cannot be read.
type failingGroups struct {
	*world
	err error
}

func (d failingGroups) Group(string) (string, []string, error) { return "", nil, d.err }

func startWithDirectory(t *testing.T, w *world, dir push.Directory) {
	t.Helper()
	s, _ := newSender(t, w, &scripted{}, push.SenderConfig{NoGrace: true}, func(d *push.SenderDeps) { d.Directory = dir })
	cancel, done := goRun(s)
	t.Cleanup(func() { cancel(); <-done })
}

func (w *world) stageGroupAt(gid string, at time.Time) snowflake.ID {
	w.mu.Lock()
	defer w.mu.Unlock()
	seq := uint16(len(w.messages) + 1) // not nextSeq: tests using this may run in parallel
	id := snowflake.Make(uint64(at.UnixMilli())-uint64(snowflake.Epoch.UnixMilli()), 1, seq)
	env := wire.Envelope{ID: id, From: "alice", Group: gid, CID: fmt.Sprint(seq), Type: wire.TypeText, Body: "x"}
	w.messages[id] = env.Marshal()
	w.queued[id] = true
	return id
}

// A message of a group that no longer exists (deleted, or another
// region's mirror dropped) has nobody to push: it leaves the outbox at
// once instead of being planned again every few seconds.
func TestAMessageOfAGroupThatIsGoneLeavesTheOutbox(t *testing.T) {
	w := newWorld()
	w.stageGroupAt("gone", time.Now())
	startWithDirectory(t, w, failingGroups{world: w, err: fmt.Errorf("users: no such group: %w", wire.ErrNotFound)})
	w.outboxEmpty(t)
}

// A message whose plan keeps failing is given up once a push of it is no
// longer worth sending (a day after its commit), not tried for ever.
func TestAMessageThatCannotBePlannedLeavesTheOutboxAfterItsLifetime(t *testing.T) {
	w := newWorld()
	w.stageGroupAt("g", time.Now().Add(-push.MessageExpiry-time.Minute))
	startWithDirectory(t, w, failingGroups{world: w, err: errors.New("disk on fire")})
	w.outboxEmpty(t)
}

// flakyPrefs fails failFor's mutes or preview reads while fail is set.
type flakyPrefs struct {
	*world
	what    string // "mutes" or "preview"
	failFor string
	fail    atomic.Bool
}

var errFlaky = errors.New("store unavailable")

func (f *flakyPrefs) Mutes(uid string, at time.Time) ([]push.Mute, error) {
	if f.what == "mutes" && uid == f.failFor && f.fail.Load() {
		return nil, errFlaky
	}
	return f.world.Mutes(uid, at)
}

func (f *flakyPrefs) Preview(uid string) (push.Preview, error) {
	if f.what == "preview" && uid == f.failFor && f.fail.Load() {
		return "", errFlaky
	}
	return f.world.Preview(uid)
}

// A read that fails when a message's devices are decided (mutes,
// do-not-disturb, read cursor, preview, unread count) does not lose the
// push: the message is planned again, and the devices already handled
// are not pushed twice.
func TestAFailedReadWhenDecidingPlansTheMessageAgain(t *testing.T) {
	for _, what := range []string{"mutes", "preview"} {
		t.Run(what, func(t *testing.T) {
			t.Parallel()
			w := newWorld()
			w.register("bob", "phone", push.Device{Platform: push.APNs, Token: "tok-bob"})
			w.register("carol", "phone", push.Device{Platform: push.APNs, Token: "tok-carol"})
			w.members["team"] = []string{"alice", "bob", "carol"}
			w.stageGroupAt("team", time.Now())
			// carol's reads go through; bob's fail until carol is pushed.
			prefs := &flakyPrefs{world: w, what: what, failFor: "bob"}
			prefs.fail.Store(true)
			p := &scripted{answer: func(d push.Device, _ int) (push.Result, error) {
				if d.Token == "tok-carol" {
					prefs.fail.Store(false) // the store is back by the next plan
				}
				return push.Result{Outcome: push.Delivered, Status: 200}, nil
			}}
			s, _ := newSender(t, w, p, push.SenderConfig{NoGrace: true}, func(d *push.SenderDeps) { d.Preferences = prefs })
			cancel, done := goRun(s)
			t.Cleanup(func() { cancel(); <-done })
			testutil.CheckFor(t, 15*time.Second, 10*time.Millisecond, func() error {
				if w.queuedCount() != 0 {
					return errors.New("message still queued")
				}
				if len(p.tries("tok-bob")) == 0 {
					return errors.New("bob not pushed")
				}
				return nil
			})
			if b, c := len(p.tries("tok-bob")), len(p.tries("tok-carol")); b != 1 || c != 1 {
				t.Fatalf("bob pushed %d times and carol %d, want once each", b, c)
			}
		})
	}
}

// A push that waited in its provider's queue (the provider slow, the
// queue long) is decided again before its first attempt, as a retry is:
// here carol read her message on another device while her push waited
// behind bob's, which the provider held for two seconds of the sender's
// clock.
func TestAPushThatWaitedInTheQueueIsDecidedAgainBeforeItIsSent(t *testing.T) {
	w := newWorld()
	w.register("bob", "phone", push.Device{Platform: push.APNs, Token: "tok-bob"})
	w.register("carol", "phone", push.Device{Platform: push.APNs, Token: "tok-carol"})
	var clock atomic.Int64
	var base time.Time
	now := func() time.Time { return base.Add(time.Duration(clock.Load())) }
	first, release := make(chan string, 1), make(chan struct{})
	p := &scripted{answer: func(d push.Device, _ int) (push.Result, error) {
		select {
		case first <- d.Token: // the first push the provider sees waits
			<-release
		default:
		}
		return push.Result{Outcome: push.Delivered, Status: 200}, nil
	}}
	ids := map[string]snowflake.ID{"tok-bob": w.stage("bob", "hi bob"), "tok-carol": w.stage("carol", "hi carol")}
	base = time.Now().Add(time.Millisecond) // the sender's clock: the messages are due, and it moves when the test says
	s, reg := newSender(t, w, p, push.SenderConfig{NoGrace: true, Concurrency: 1}, func(d *push.SenderDeps) { d.Now = now })
	cancel, done := goRun(s)
	t.Cleanup(func() { cancel(); <-done })
	var held string
	select {
	case held = <-first:
	case <-time.After(10 * time.Second):
		t.Fatal("no push reached the provider")
	}
	testutil.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		if v, _ := testutil.MetricValue(t, reg, "edgechat_push_decisions_total", map[string]string{"verdict": "push"}); v != 2 {
			return fmt.Errorf("%v devices decided to push, want both", v)
		}
		return nil
	})
	waiting, user := "tok-carol", "carol"
	if held == "tok-carol" {
		waiting, user = "tok-bob", "bob"
	}
	clock.Add(int64(2 * time.Second))
	w.mu.Lock()
	w.read[user] = ids[waiting] // read elsewhere meanwhile
	w.mu.Unlock()
	close(release)
	w.outboxEmpty(t)
	if n := len(p.tries(waiting)); n != 0 {
		t.Errorf("%s's push, read while it waited in the queue, was sent %d times", user, n)
	}
	if n := len(p.tries(held)); n != 1 {
		t.Errorf("the held push was tried %d times", n)
	}
}
