package push_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgechat/edgechat/bridge/push"
	"github.com/edgechat/edgechat/bridge/push/pushtest"
)

func TestNewFromConfigNothingConfigured(t *testing.T) {
	r, err := push.NewFromConfig(push.Providers{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []push.Platform{push.APNs, push.FCM, push.WebPush} {
		if r.Enabled(p) {
			t.Errorf("%s enabled", p)
		}
	}
	res, err := r.Send(t.Context(), push.Device{Platform: push.FCM, Token: "x"}, push.Notification{Title: "t"})
	if res.Outcome != push.Failed || !errors.Is(err, push.ErrNoProvider) || !errors.Is(err, push.ErrRejected) {
		t.Fatalf("%+v %v", res, err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestNewFromConfigBadProvider(t *testing.T) {
	_, err := push.NewFromConfig(push.Providers{
		WebPush: &push.WebPushConfig{Subject: "mailto:ops@example.com"}, VAPIDKeys: func() (string, string, error) { return "", "", nil },
		FCM: &push.FCMConfig{CredentialsJSON: []byte(`{}`)}})
	if !errors.Is(err, push.ErrConfig) {
		t.Fatalf("bad FCM credentials: %v", err)
	}
	if _, err := push.NewFromConfig(push.Providers{WebPush: &push.WebPushConfig{Subject: "mailto:ops@example.com"}}); !errors.Is(err, push.ErrConfig) {
		t.Fatalf("Web Push without keys: %v", err)
	}
}

// Web Push waits for the cluster's VAPID key: until it exists a send is
// RetryLater; then the provider is built once and delivers.
func TestNewFromConfigWebPushTakesTheKeyLate(t *testing.T) {
	pub, priv, err := pushtest.NewVAPIDKeys()
	if err != nil {
		t.Fatal(err)
	}
	mock := pushtest.StartWebPush(t, pub)
	var mu sync.Mutex
	ready, calls := false, 0
	keys := func() (string, string, error) {
		mu.Lock()
		defer mu.Unlock()
		calls++
		if !ready {
			return "", "", errors.New("not replicated yet")
		}
		return pub, priv, nil
	}
	r, err := push.NewFromConfig(push.Providers{VAPIDKeys: keys,
		WebPush: &push.WebPushConfig{Subject: "mailto:ops@example.com", TLSConfig: mock.TLSConfig(), AllowPrivateEndpoints: true}})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if !r.Enabled(push.WebPush) {
		t.Fatal("Web Push not enabled")
	}
	sub := mock.Subscribe()
	d := push.Device{Platform: push.WebPush, Endpoint: sub.Endpoint, P256dh: sub.P256dh, Auth: sub.Auth}
	n := push.Notification{Title: "t", Body: "hello"}
	res, err := r.Send(t.Context(), d, n)
	if res.Outcome != push.RetryLater || !errors.Is(err, push.ErrRetryLater) {
		t.Fatalf("before the key: %+v %v", res, err)
	}
	mu.Lock()
	ready = true
	mu.Unlock()
	for range 2 {
		if res, err := r.Send(t.Context(), d, n); err != nil || res.Outcome != push.Delivered {
			t.Fatalf("after the key: %+v %v", res, err)
		}
	}
	if calls != 2 {
		t.Errorf("the keys were read %d times, want 2 (once missing, once found)", calls)
	}
	if got := mock.Delivered(sub); got != 2 {
		t.Errorf("delivered %d", got)
	}
}

// fakeSender answers by token.
type fakeSender struct {
	mu      sync.Mutex
	got     []push.Notification
	answers map[string]push.Result
}

func (f *fakeSender) Name() string { return "fake" }

func (f *fakeSender) Send(_ context.Context, d push.Device, n push.Notification) (push.Result, error) {
	f.mu.Lock()
	f.got = append(f.got, n)
	f.mu.Unlock()
	tok := d.Token
	if d.Platform == push.WebPush {
		tok = d.Endpoint
	}
	res, ok := f.answers[tok]
	if !ok {
		return push.Result{Outcome: push.Failed}, push.ErrNoProvider
	}
	switch res.Outcome {
	case push.Delivered:
		return res, nil
	case push.DeadToken:
		return res, push.ErrDeadToken
	}
	return res, push.ErrRetryLater
}

type fakeRegs struct {
	devs    []push.Registered
	failRm  bool
	mu      sync.Mutex
	removed []string
}

func (f *fakeRegs) Devices(string) ([]push.Registered, error) { return f.devs, nil }

func (f *fakeRegs) RemoveToken(_ context.Context, uid string, p push.Platform, token string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failRm {
		return errors.New("cannot commit")
	}
	f.removed = append(f.removed, uid+" "+string(p)+" "+token)
	return nil
}

func counter(t *testing.T, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			var lv []string
			for _, lp := range m.GetLabel() {
				lv = append(lv, lp.GetValue())
			}
			if slices.Equal(lv, labels) {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("%s%v not found", name, labels)
	return 0
}

func TestTesterSendsAndRemovesDeadTokens(t *testing.T) {
	now := time.Now()
	regs := &fakeRegs{devs: []push.Registered{
		{Name: "phone", Device: push.Device{Platform: push.APNs, Token: "live"}},
		{Name: "old", Device: push.Device{Platform: push.APNs, Token: "dead"}, UpdatedAt: now.Add(-time.Hour)},
		{Name: "fresh", Device: push.Device{Platform: push.APNs, Token: "dead-but-refreshed"}, UpdatedAt: now.Add(time.Hour)},
		{Name: "browser", Device: push.Device{Platform: push.WebPush, Endpoint: "https://push.example/ep"}},
		{Name: "pixel", Device: push.Device{Platform: push.FCM, Token: "busy"}},
		{Name: "other", Device: push.Device{Platform: push.FCM, Token: "unknown"}},
	}}
	sender := &fakeSender{answers: map[string]push.Result{
		"live":                    {Outcome: push.Delivered, Status: 200},
		"dead":                    {Outcome: push.DeadToken, Status: 410, Reason: "Unregistered", InvalidSince: now},
		"dead-but-refreshed":      {Outcome: push.DeadToken, Status: 410, Reason: "Unregistered", InvalidSince: now},
		"https://push.example/ep": {Outcome: push.DeadToken, Status: 404},
		"busy":                    {Outcome: push.RetryLater, Status: 429, Reason: "QUOTA_EXCEEDED"},
	}}
	reg := prometheus.NewRegistry()
	m, err := push.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	tester, err := push.NewTester(push.TesterDeps{Sender: push.Counted(sender, m), Registrations: regs, Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	// The handler reads its path value: serve it through a mux.
	mux := http.NewServeMux()
	rt := tester.Routes()[0]
	if !rt.Admin || rt.Class != "admin" || rt.Pattern != "/admin/push/test/{uid}" || rt.Method != http.MethodPost {
		t.Fatalf("route %+v", rt)
	}
	mux.HandleFunc(rt.Method+" "+rt.Pattern, rt.Handler)
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/admin/push/test/alice", nil))
	if rec.Code != 200 {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	var ans struct{ Results []push.TestResult }
	if err := json.Unmarshal(rec.Body.Bytes(), &ans); err != nil {
		t.Fatal(err)
	}
	want := []push.TestResult{
		{Device: "phone", Platform: "apns", Outcome: "delivered", Status: 200},
		{Device: "old", Platform: "apns", Outcome: "dead_token", Status: 410, Reason: "Unregistered", Removed: true},
		{Device: "fresh", Platform: "apns", Outcome: "dead_token", Status: 410, Reason: "Unregistered"},
		{Device: "browser", Platform: "webpush", Outcome: "dead_token", Status: 404, Reason: push.ErrDeadToken.Error(), Removed: true},
		{Device: "pixel", Platform: "fcm", Outcome: "retry", Status: 429, Reason: "QUOTA_EXCEEDED"},
		{Device: "other", Platform: "fcm", Outcome: "failed", Reason: "no provider"},
	}
	if !slices.Equal(ans.Results, want) {
		t.Errorf("results\n got %+v\nwant %+v", ans.Results, want)
	}
	slices.Sort(regs.removed)
	if w := []string{"alice apns dead", "alice webpush https://push.example/ep"}; !slices.Equal(regs.removed, w) {
		t.Errorf("removed %q, want %q", regs.removed, w)
	}
	for _, n := range sender.got {
		if n.Body != push.TestNotificationText || n.Expiry.IsZero() {
			t.Errorf("notification %+v", n)
		}
	}
	if got := counter(t, reg, "edgechat_push_sent_total", "apns", "dead_token"); got != 2 {
		t.Errorf("apns dead_token sends %v", got)
	}
	if got := counter(t, reg, "edgechat_push_sent_total", "fcm", "retry"); got != 1 {
		t.Errorf("fcm retry sends %v", got)
	}
	if got := counter(t, reg, "edgechat_push_tokens_removed_total", "apns"); got != 1 {
		t.Errorf("apns removed %v", got)
	}
	if got := counter(t, reg, "edgechat_push_tokens_removed_total", "fcm"); got != 0 {
		t.Errorf("fcm removed %v", got)
	}

	// A removal that fails is reported as not removed.
	regs.failRm = true
	res, err := tester.Test(t.Context(), "alice")
	if err != nil || res[1].Removed || res[1].Outcome != "dead_token" {
		t.Errorf("failed removal: %+v %v", res, err)
	}

	// A malformed user ID is refused.
	rec = httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/admin/push/test/%20x", nil))
	if rec.Code != http.StatusBadRequest {
		t.Errorf("bad uid: %d", rec.Code)
	}
}
