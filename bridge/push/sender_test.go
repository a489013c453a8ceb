package push_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgechat/edgechat/bridge/push"
	"github.com/edgechat/edgechat/bridge/push/pushtest"
	"github.com/edgechat/edgechat/internal/snowflake"
	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/internal/wire"
)

// world is the sender's surroundings in memory: an outbox, devices,
// preferences, messages, a directory, connections and a leadership the
// test flips. The provider is real (against a mock) or scripted.
type world struct {
	mu        sync.Mutex
	queued    map[snowflake.ID]bool
	handled   map[snowflake.ID][]string
	devices   map[string][]push.Registered
	removed   []string // "uid platform token"
	messages  map[snowflake.ID][]byte
	members   map[string][]string
	connected map[string]bool
	mutes     map[string][]push.Mute
	read      map[string]snowflake.ID  // uid's read cursor (any conversation)
	reads     map[string]int           // Devices calls per uid
	held      map[string]chan struct{} // uid's reads after the first wait for it to close (holdReads)
	leader    bool
	changed   chan struct{}
	records   int
}

func newWorld() *world {
	return &world{queued: map[snowflake.ID]bool{}, handled: map[snowflake.ID][]string{},
		devices: map[string][]push.Registered{}, messages: map[snowflake.ID][]byte{},
		members: map[string][]string{}, connected: map[string]bool{}, mutes: map[string][]push.Mute{},
		read: map[string]snowflake.ID{}, reads: map[string]int{}, held: map[string]chan struct{}{}, leader: true,
		changed: make(chan struct{})}
}

// Outbox.
func (w *world) EachQueued(fn func(snowflake.ID) bool) error {
	w.mu.Lock()
	ids := make([]snowflake.ID, 0, len(w.queued))
	for id := range w.queued {
		ids = append(ids, id)
	}
	w.mu.Unlock()
	slices.Sort(ids)
	for _, id := range ids {
		if !fn(id) {
			break
		}
	}
	return nil
}

func (w *world) Handled(id snowflake.ID) ([]string, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := slices.Clone(w.handled[id])
	slices.Sort(out)
	return out, nil
}

func (w *world) RecordProgress(_ context.Context, p push.Progress) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.records++
	for id, cids := range p.Handled {
		if w.queued[id] {
			w.handled[id] = append(w.handled[id], cids...)
		}
	}
	for _, id := range p.Done {
		delete(w.queued, id)
		delete(w.handled, id)
	}
	return nil
}

func (w *world) queuedCount() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.queued)
}

// Registrations.
func (w *world) Devices(uid string) ([]push.Registered, error) {
	w.mu.Lock()
	w.reads[uid]++
	n, held := w.reads[uid], w.held[uid]
	w.mu.Unlock()
	if held != nil && n > 1 {
		<-held
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.devices[uid]), nil
}

// holdReads makes the reads of uid's devices after the first (the plan's)
// wait until release is called: a test's change then lands before the
// decision at the end of the grace period however late the test runs.
func (w *world) holdReads(uid string) (release func()) {
	ch := make(chan struct{})
	w.mu.Lock()
	w.held[uid] = ch
	w.mu.Unlock()
	var once sync.Once
	return func() { once.Do(func() { close(ch) }) }
}

func (w *world) RemoveToken(_ context.Context, uid string, p push.Platform, token string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.removed = append(w.removed, fmt.Sprintf("%s %s %s", uid, p, token))
	return nil
}

// Preferences.
func (w *world) Mutes(uid string, _ time.Time) ([]push.Mute, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.mutes[uid]), nil
}
func (w *world) DND(string) (*push.DND, error)        { return nil, nil }
func (w *world) Preview(string) (push.Preview, error) { return push.PreviewFull, nil }
func (w *world) GroupOptIns(string) ([]string, error) { return nil, nil }

// Archive.
func (w *world) Message(id snowflake.ID) ([]byte, bool, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	p, ok := w.messages[id]
	return p, ok, nil
}
func (w *world) MessageIn(id snowflake.ID, _, _, _ string) ([]byte, bool, error) {
	return w.Message(id)
}
func (w *world) ReadUpTo(uid, _, _ string) (snowflake.ID, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.read[uid], nil
}
func (w *world) LateUnread(string, string, string) (bool, error) { return false, nil }
func (w *world) UnreadTotal(string) (int, error)                 { return 1, nil }

// Directory.
func (w *world) DisplayName(uid string) string { return uid }
func (w *world) Group(gid string) (string, []string, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return gid, slices.Clone(w.members[gid]), nil
}
func (w *world) IsMember(gid, uid string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Contains(w.members[gid], uid)
}

// Connections.
func (w *world) Connected(cid string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.connected[cid]
}

// Leadership.
func (w *world) IsLeader() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.leader
}

func (w *world) Barrier(context.Context) error { return nil }

func (w *world) MembersChanged() <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.changed
}

func (w *world) setLeader(v bool) {
	w.mu.Lock()
	w.leader = v
	close(w.changed)
	w.changed = make(chan struct{})
	w.mu.Unlock()
}

// stage commits a direct message from alice to uid into the archive and
// the outbox.
var nextSeq uint16

func (w *world) stage(uid, body string) snowflake.ID {
	w.mu.Lock()
	defer w.mu.Unlock()
	nextSeq++
	id := snowflake.Make(uint64(time.Now().UnixMilli())-uint64(snowflake.Epoch.UnixMilli()), 1, nextSeq)
	env := wire.Envelope{ID: id, From: "alice", To: uid, CID: fmt.Sprint(nextSeq), Type: wire.TypeText, Body: body}
	w.messages[id] = env.Marshal()
	w.queued[id] = true
	return id
}

func (w *world) register(uid, name string, d push.Device) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.devices[uid] = append(w.devices[uid], push.Registered{Name: name, Device: d, UpdatedAt: time.Unix(0, 0)})
}

// startSender runs a sender over w until the test ends.
func startSender(t *testing.T, w *world, p push.Provider, cfg push.SenderConfig) (*push.Sender, *prometheus.Registry) {
	t.Helper()
	s, reg, stop := launchSender(t, w, p, cfg)
	t.Cleanup(stop)
	return s, reg
}

// launchSender runs a sender over w until stop, which (the first time)
// cancels it and waits up to 10 s for it to return.
func launchSender(t *testing.T, w *world, p push.Provider, cfg push.SenderConfig) (s *push.Sender, reg *prometheus.Registry, stop func()) {
	t.Helper()
	s, reg = newSender(t, w, p, cfg, nil)
	cancel, done := goRun(s)
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Error("sender did not stop")
			}
		})
	}
	return s, reg, stop
}

// newSender builds a sender with cfg over w and p, counted in the
// sender's metrics; edit, unless nil, first changes its dependencies
// (another directory, other preferences).
func newSender(t *testing.T, w *world, p push.Provider, cfg push.SenderConfig, edit func(*push.SenderDeps)) (*push.Sender, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	m, err := push.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	deps := push.SenderDeps{Outbox: w, Registrations: w, Preferences: w, Archive: w,
		Directory: w, Connections: w, Leadership: w, Provider: push.Counted(p, m), Metrics: m, Registerer: reg,
		Logger: testutil.QuietLogger()}
	if edit != nil {
		edit(&deps)
	}
	s, err := push.NewSender(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	return s, reg
}

// goRun runs s until cancel; done has what Run returned.
func goRun(s *push.Sender) (cancel context.CancelFunc, done <-chan error) {
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- s.Run(ctx) }()
	return cancel, ran
}

// scripted is a provider whose answers a test scripts per token; it
// records every attempt.
type scripted struct {
	mu       sync.Mutex
	answer   func(d push.Device, attempt int) (push.Result, error)
	attempts map[string][]time.Time
	block    chan struct{} // when set, sends wait for it (or their ctx)
}

func (s *scripted) Name() string { return "scripted" }

func (s *scripted) Send(ctx context.Context, d push.Device, n push.Notification) (push.Result, error) {
	tok := d.Token + d.Endpoint
	s.mu.Lock()
	if s.attempts == nil {
		s.attempts = map[string][]time.Time{}
	}
	s.attempts[tok] = append(s.attempts[tok], time.Now())
	attempt := len(s.attempts[tok])
	block, answer := s.block, s.answer
	s.mu.Unlock()
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			return push.Result{Outcome: push.RetryLater}, ctx.Err()
		}
	}
	if answer == nil {
		return push.Result{Outcome: push.Delivered, Status: 200}, nil
	}
	return answer(d, attempt)
}

func (s *scripted) tries(tok string) []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.attempts[tok])
}

func TestSenderRetriesHonouringRetryAfterThenDelivers(t *testing.T) {
	w := newWorld()
	w.register("bob", "phone", push.Device{Platform: push.APNs, Token: "tok-retry"})
	p := &scripted{answer: func(_ push.Device, attempt int) (push.Result, error) {
		if attempt < 3 {
			return push.Result{Outcome: push.RetryLater, Status: 429, RetryAfter: 400 * time.Millisecond}, push.ErrRetryLater
		}
		return push.Result{Outcome: push.Delivered, Status: 200}, nil
	}}
	w.stage("bob", "hi")
	_, reg := startSender(t, w, p, push.SenderConfig{NoGrace: true, RetryMin: time.Millisecond, RetryMax: 5 * time.Millisecond})
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if w.queuedCount() != 0 {
			return errors.New("message still queued")
		}
		return nil
	})
	tries := p.tries("tok-retry")
	if len(tries) != 3 {
		t.Fatalf("%d attempts, want 3", len(tries))
	}
	for i := 1; i < len(tries); i++ {
		if gap := tries[i].Sub(tries[i-1]); gap < 400*time.Millisecond {
			t.Errorf("attempt %d came %v after the one before, inside Retry-After", i+1, gap)
		}
	}
	if v, _ := testutil.MetricValue(t, reg, "edgechat_push_retries_total", nil); v != 2 {
		t.Errorf("retries = %v", v)
	}
}

// One device whose provider asks to retry later does not make its
// siblings, delivered at the first attempt, get the message again
// (LESSONS 17): only the failing device is retried.
func TestSenderRetriesOnlyTheDeviceThatFailed(t *testing.T) {
	w := newWorld()
	w.register("bob", "phone", push.Device{Platform: push.APNs, Token: "apns-busy"})
	w.register("bob", "pixel", push.Device{Platform: push.FCM, Token: "fcm-ok"})
	w.register("bob", "tablet", push.Device{Platform: push.APNs, Token: "apns-ok"})
	p := &scripted{answer: func(d push.Device, attempt int) (push.Result, error) {
		if d.Token == "apns-busy" && attempt < 3 {
			return push.Result{Outcome: push.RetryLater, Status: 503}, push.ErrRetryLater
		}
		return push.Result{Outcome: push.Delivered, Status: 200}, nil
	}}
	w.stage("bob", "hi")
	startSender(t, w, p, push.SenderConfig{NoGrace: true, RetryMin: time.Millisecond, RetryMax: 5 * time.Millisecond})
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if w.queuedCount() != 0 {
			return errors.New("message still queued")
		}
		return nil
	})
	if n := len(p.tries("apns-busy")); n != 3 {
		t.Errorf("the busy device was tried %d times, want 3", n)
	}
	for _, tok := range []string{"fcm-ok", "apns-ok"} {
		if n := len(p.tries(tok)); n != 1 {
			t.Errorf("device %s got the message %d times while its sibling was retried, want 1", tok, n)
		}
	}
}

func TestSenderGivesUpAfterMaxAttempts(t *testing.T) {
	w := newWorld()
	w.register("bob", "phone", push.Device{Platform: push.FCM, Token: "tok-down"})
	p := &scripted{answer: func(push.Device, int) (push.Result, error) {
		return push.Result{Outcome: push.RetryLater, Status: 503}, push.ErrRetryLater
	}}
	w.stage("bob", "hi")
	_, reg := startSender(t, w, p, push.SenderConfig{NoGrace: true, MaxAttempts: 4, RetryMin: time.Millisecond,
		RetryMax: 2 * time.Millisecond})
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if w.queuedCount() != 0 {
			return errors.New("message still queued")
		}
		return nil
	})
	if n := len(p.tries("tok-down")); n != 4 {
		t.Fatalf("%d attempts, want 4", n)
	}
	if v, _ := testutil.MetricValue(t, reg, "edgechat_push_given_up_total", map[string]string{"reason": "attempts"}); v != 1 {
		t.Errorf("given up = %v", v)
	}
}

// Every provider's dead-token answer removes the registration, by the
// token (the endpoint for Web Push), and the message is done.
func TestSenderRemovesDeadTokens(t *testing.T) {
	w := newWorld()
	w.register("bob", "phone", push.Device{Platform: push.APNs, Token: "apns-dead"})
	w.register("bob", "pixel", push.Device{Platform: push.FCM, Token: "fcm-dead"})
	w.register("bob", "browser", push.Device{Platform: push.WebPush, Endpoint: "https://push.example/dead", P256dh: "k", Auth: "a"})
	w.register("bob", "tablet", push.Device{Platform: push.APNs, Token: "apns-live"})
	p := &scripted{answer: func(d push.Device, _ int) (push.Result, error) {
		if d.Token == "apns-live" {
			return push.Result{Outcome: push.Delivered, Status: 200}, nil
		}
		return push.Result{Outcome: push.DeadToken, Status: 410}, push.ErrDeadToken
	}}
	w.stage("bob", "hi")
	_, reg := startSender(t, w, p, push.SenderConfig{NoGrace: true})
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if w.queuedCount() != 0 {
			return errors.New("message still queued")
		}
		return nil
	})
	w.mu.Lock()
	removed := slices.Sorted(slices.Values(w.removed))
	w.mu.Unlock()
	want := []string{"bob apns apns-dead", "bob fcm fcm-dead", "bob webpush https://push.example/dead"}
	if !slices.Equal(removed, want) {
		t.Fatalf("removed %q, want %q", removed, want)
	}
	for _, pl := range []string{"apns", "fcm", "webpush"} {
		if v, _ := testutil.MetricValue(t, reg, "edgechat_push_tokens_removed_total", map[string]string{"provider": pl}); v != 1 {
			t.Errorf("%s tokens removed = %v", pl, v)
		}
	}
}

// A provider that hangs or answers garbage costs its own pushes their
// timeout and retries; the other providers' pushes go out meanwhile.
func TestSenderHangingProviderDoesNotHoldOthers(t *testing.T) {
	apns, mock := startAPNs(t)
	w := newWorld()
	hung, garbage := pushtest.NewDeviceToken(), pushtest.NewDeviceToken()
	mock.Fail(hung, pushtest.Hang)
	mock.Fail(garbage, pushtest.Garbage)
	w.register("bob", "phone", push.Device{Platform: push.APNs, Token: hung})
	w.register("bob", "tablet", push.Device{Platform: push.APNs, Token: garbage})
	w.register("bob", "pixel", push.Device{Platform: push.FCM, Token: "fcm-ok"})
	fcm := &scripted{}
	router := push.NewRouter(map[push.Platform]push.Provider{push.APNs: apns, push.FCM: fcm})
	w.stage("bob", "hi")
	_, reg := startSender(t, w, router, push.SenderConfig{NoGrace: true, SendTimeout: 15 * time.Second, MaxAttempts: 1})
	testutil.CheckFor(t, 15*time.Second, 5*time.Millisecond, func() error {
		if len(fcm.tries("fcm-ok")) == 0 {
			return errors.New("FCM push not sent")
		}
		return nil
	})
	// The FCM push went out while the hanging APNs push still waited
	// for its answer (given up only at its send timeout).
	if v, _ := testutil.MetricValue(t, reg, "edgechat_push_given_up_total", map[string]string{"reason": "attempts"}); v >= 2 {
		t.Errorf("the FCM push went out only after the hanging APNs push was given up (%v given up)", v)
	}
	testutil.CheckFor(t, 30*time.Second, 10*time.Millisecond, func() error {
		if w.queuedCount() != 0 {
			return errors.New("message still queued")
		}
		return nil
	})
	if v, _ := testutil.MetricValue(t, reg, "edgechat_push_given_up_total", map[string]string{"reason": "attempts"}); v != 2 {
		t.Errorf("given up = %v, want the hanging and the garbage push", v)
	}
}

// A leadership change mid-send: the old leader's unanswered pushes are
// not recorded, the new leader sends them and skips what was recorded,
// so each device gets its push once.
func TestSenderNewLeaderResumesWithoutDoubles(t *testing.T) {
	w := newWorld()
	const devices = 20
	for i := range devices {
		w.register("bob", fmt.Sprint("d", i), push.Device{Platform: push.APNs, Token: fmt.Sprint("tok", i)})
	}
	first := &firstTerm{limit: devices / 2, answered: map[string]int{}}
	w.stage("bob", "hi")
	startSender(t, w, first, push.SenderConfig{NoGrace: true, Concurrency: 4, ProgressEvery: 10 * time.Millisecond})
	testutil.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		w.mu.Lock()
		defer w.mu.Unlock()
		for id := range w.queued {
			if len(w.handled[id]) >= devices/2 {
				return nil
			}
		}
		return errors.New("first half not recorded")
	})
	w.setLeader(false) // the term ends: the sends held are abandoned
	// The deposed sender stops; another one leads (the same world is the
	// replicated state).
	w2 := w
	second := &scripted{}
	w2.setLeader(true)
	startSender(t, w2, second, push.SenderConfig{NoGrace: true})
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if w.queuedCount() != 0 {
			return errors.New("message still queued")
		}
		return nil
	})
	first.mu.Lock()
	defer first.mu.Unlock()
	for i := range devices {
		tok := fmt.Sprint("tok", i)
		n := first.answered[tok] + len(second.tries(tok))
		if n != 1 {
			t.Errorf("%s pushed %d times", tok, n)
		}
	}
}

func TestSenderOnlyPushesWhileLeading(t *testing.T) {
	w := newWorld()
	w.register("bob", "phone", push.Device{Platform: push.APNs, Token: "tok"})
	w.setLeader(false)
	p := &scripted{}
	s, _ := startSender(t, w, p, push.SenderConfig{NoGrace: true})
	id := w.stage("bob", "hi")
	s.Staged(id)
	time.Sleep(200 * time.Millisecond) // a follower must stay quiet: nothing to wait for
	if n := len(p.tries("tok")); n != 0 {
		t.Fatalf("a follower pushed %d times", n)
	}
	w.setLeader(true)
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if w.queuedCount() != 0 || len(p.tries("tok")) != 1 {
			return fmt.Errorf("queued %d, tries %d", w.queuedCount(), len(p.tries("tok")))
		}
		return nil
	})
}

// firstTerm delivers the first limit pushes and holds the others until
// their context ends (the provider never accepts them).
type firstTerm struct {
	limit    int
	mu       sync.Mutex
	answered map[string]int
	started  int
}

func (f *firstTerm) Name() string { return "first" }

func (f *firstTerm) Send(ctx context.Context, d push.Device, _ push.Notification) (push.Result, error) {
	f.mu.Lock()
	f.started++
	hold := f.started > f.limit
	if !hold {
		f.answered[d.Token]++
	}
	f.mu.Unlock()
	if hold {
		<-ctx.Done()
		return push.Result{Outcome: push.RetryLater}, ctx.Err()
	}
	return push.Result{Outcome: push.Delivered, Status: 200}, nil
}

// The sender's line for a push it gives up shows a Web Push endpoint as
// the provider's own line does: the push service and a shortened path,
// never the path (the subscription's secret) in full.
func TestSenderLogsNoWebPushEndpointInFull(t *testing.T) {
	const secret = "fGhX-subscription-secret-path-0123456789abcdef"
	w := newWorld()
	w.register("bob", "browser", push.Device{Platform: push.WebPush, Endpoint: "https://push.example/wpush/v2/" + secret, P256dh: "k", Auth: "a"})
	p := &scripted{answer: func(push.Device, int) (push.Result, error) {
		return push.Result{Outcome: push.Failed, Status: 400}, push.ErrRejected
	}}
	var buf bytes.Buffer
	var mu sync.Mutex
	log := slog.New(slog.NewJSONHandler(&lockedWriter{w: &buf, mu: &mu}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	w.stage("bob", "hi")
	s, _ := newSender(t, w, p, push.SenderConfig{NoGrace: true}, func(d *push.SenderDeps) { d.Logger = log })
	cancel, done := goRun(s)
	t.Cleanup(func() { cancel(); <-done })
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if w.queuedCount() != 0 {
			return errors.New("message still queued")
		}
		return nil
	})
	mu.Lock()
	out := buf.String()
	mu.Unlock()
	if !strings.Contains(out, `"msg":"push send failed"`) || !strings.Contains(out, "https://push.example/") {
		t.Errorf("no failure line naming the push service: %s", out)
	}
	if strings.Contains(out, secret) {
		t.Errorf("the log holds the endpoint in full: %s", out)
	}
}
