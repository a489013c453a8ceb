package push_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgechat/edgechat/bridge/push"
	"github.com/edgechat/edgechat/bridge/push/pushtest"
)

func startWebPush(t *testing.T, subject string) (*push.WebPushProvider, *pushtest.WebPush) {
	t.Helper()
	pub, priv, err := pushtest.NewVAPIDKeys()
	if err != nil {
		t.Fatal(err)
	}
	mock := pushtest.StartWebPush(t, pub)
	p, err := push.NewWebPush(push.WebPushConfig{
		VAPIDPublicKey: pub, VAPIDPrivateKey: priv, Subject: subject, TLSConfig: mock.TLSConfig(),
		AllowPrivateEndpoints: true, // the mock listens on 127.0.0.1
	})
	if err != nil {
		t.Fatal(err)
	}
	return p, mock
}

func webDevice(s pushtest.Subscription) push.Device {
	return push.Device{Platform: push.WebPush, Endpoint: s.Endpoint, P256dh: s.P256dh, Auth: s.Auth}
}

func TestWebPushDelivers(t *testing.T) {
	p, mock := startWebPush(t, "mailto:ops@example.com")
	sub := mock.Subscribe()
	n := fullNotification()
	res, err := p.Send(t.Context(), webDevice(sub), n)
	if err != nil || res.Outcome != push.Delivered || res.Status != 201 {
		t.Fatalf("%+v, %v", res, err)
	}
	if errs := mock.Errors(); len(errs) > 0 {
		t.Fatalf("mock refused: %v", errs)
	}
	reqs := mock.Requests()
	if len(reqs) != 1 {
		t.Fatalf("%d requests", len(reqs))
	}
	r := reqs[0]
	if r.Subject != "mailto:ops@example.com" {
		t.Errorf("VAPID sub %q", r.Subject)
	}
	if r.Topic != "c-7f3a" || r.Urgency != "high" {
		t.Errorf("Topic %q, Urgency %q", r.Topic, r.Urgency)
	}
	if r.TTL < 3590 || r.TTL > 3600 {
		t.Errorf("TTL %d, want about 3600 (the expiry an hour away)", r.TTL)
	}
	var got push.WebPushPayload
	if err := json.Unmarshal(r.Payload, &got); err != nil {
		t.Fatalf("decrypted payload %q: %v", r.Payload, err)
	}
	if got.Title != "Alice" || got.Body != "hello bob" || got.Badge == nil || *got.Badge != 3 || got.Tag != "c-7f3a" ||
		got.MessageID != "7211938138472448001" || got.ConversationID != "c-7f3a" || got.Data["from"] != "alice" {
		t.Errorf("decrypted payload %+v", got)
	}
}

func TestWebPushHTTPSSubjectAndHashedTopic(t *testing.T) {
	p, mock := startWebPush(t, "https://chat.example.com/contact")
	sub := mock.Subscribe()
	n := push.Notification{Title: "t", CollapseID: "group:" + strings.Repeat("x", 60)}
	if _, err := p.Send(t.Context(), webDevice(sub), n); err != nil {
		t.Fatal(err)
	}
	r := mock.Requests()[0]
	if r.Subject != "https://chat.example.com/contact" {
		t.Errorf("sub %q", r.Subject)
	}
	if len(r.Topic) != 32 {
		t.Errorf("Topic %q: want a 32-character hash", r.Topic)
	}
	if r.TTL < 86390 {
		t.Errorf("TTL %d, want a day for a notification without expiry", r.TTL)
	}
}

func TestWebPushFaults(t *testing.T) {
	p, mock := startWebPush(t, "mailto:ops@example.com")
	mock.SetRetryAfter(time.Now().Add(90 * time.Second).UTC().Format(httpDate))
	cases := []struct {
		fault    pushtest.Fault
		outcome  push.Outcome
		sentinel error
		status   int
	}{
		{pushtest.Unregistered, push.DeadToken, push.ErrDeadToken, 410},
		{pushtest.BadToken, push.DeadToken, push.ErrDeadToken, 404},
		{pushtest.BadRequest, push.Failed, push.ErrRejected, 400},
		{pushtest.TooManyRequests, push.RetryLater, push.ErrRetryLater, 429},
		{pushtest.ServerError, push.RetryLater, push.ErrRetryLater, 500},
		{pushtest.Garbage, push.RetryLater, push.ErrRetryLater, 0},
	}
	for _, c := range cases {
		sub := mock.Subscribe()
		mock.Fail(sub, c.fault)
		res, err := p.Send(t.Context(), webDevice(sub), fullNotification())
		if res.Outcome != c.outcome || res.Status != c.status {
			t.Errorf("fault %d: %+v, want %v %d", c.fault, res, c.outcome, c.status)
		}
		if !errors.Is(err, c.sentinel) {
			t.Errorf("fault %d: error %v, want %v", c.fault, err, c.sentinel)
		}
		if err != nil && strings.Contains(err.Error(), sub.ID()) {
			t.Errorf("fault %d: the error holds the subscription: %v", c.fault, err)
		}
		if c.fault == pushtest.TooManyRequests && (res.RetryAfter < 80*time.Second || res.RetryAfter > 91*time.Second) {
			t.Errorf("Retry-After as an HTTP date: %v, want about 90s", res.RetryAfter)
		}
	}
	if errs := mock.Errors(); len(errs) > 0 {
		t.Errorf("mock refused: %v", errs)
	}
}

const httpDate = "Mon, 02 Jan 2006 15:04:05 GMT"

func TestWebPushHangTimesOutWithoutBlockingOthers(t *testing.T) {
	p, mock := startWebPush(t, "mailto:ops@example.com")
	stuck := mock.Subscribe()
	mock.Fail(stuck, pushtest.Hang)
	const hang = time.Second
	var wg sync.WaitGroup
	var err error
	wg.Add(1)
	go func() {
		defer wg.Done()
		ctx, cancel := context.WithTimeout(t.Context(), hang)
		defer cancel()
		_, err = p.Send(ctx, webDevice(stuck), fullNotification())
	}()
	start := time.Now()
	other := mock.Subscribe()
	for range 20 {
		if _, err := p.Send(t.Context(), webDevice(other), fullNotification()); err != nil {
			t.Fatal(err)
		}
	}
	if took := time.Since(start); took > hang/2 {
		t.Errorf("20 sends beside a hanging one took %v", took)
	}
	wg.Wait()
	if !errors.Is(err, push.ErrRetryLater) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("hanging send: %v", err)
	}
}

func TestWebPushRefusesBadSubscriptions(t *testing.T) {
	p, mock := startWebPush(t, "mailto:ops@example.com")
	good := mock.Subscribe()
	other := mock.Subscribe()
	cases := map[string]push.Device{
		"http endpoint":   {Platform: push.WebPush, Endpoint: strings.Replace(good.Endpoint, "https", "http", 1), P256dh: good.P256dh, Auth: good.Auth},
		"no endpoint":     {Platform: push.WebPush, P256dh: good.P256dh, Auth: good.Auth},
		"bad p256dh":      {Platform: push.WebPush, Endpoint: good.Endpoint, P256dh: "AAAA", Auth: good.Auth},
		"p256dh not b64":  {Platform: push.WebPush, Endpoint: good.Endpoint, P256dh: "!!!", Auth: good.Auth},
		"short auth":      {Platform: push.WebPush, Endpoint: good.Endpoint, P256dh: good.P256dh, Auth: "AAAA"},
		"other platform":  {Platform: push.APNs, Endpoint: good.Endpoint, P256dh: good.P256dh, Auth: good.Auth},
		"swapped secrets": {Platform: push.WebPush, Endpoint: good.Endpoint, P256dh: good.P256dh, Auth: good.P256dh},
	}
	for name, d := range cases {
		res, err := p.Send(t.Context(), d, fullNotification())
		if res.Outcome != push.Failed || !errors.Is(err, push.ErrInvalidDevice) {
			t.Errorf("%s: %+v, %v; want ErrInvalidDevice", name, res, err)
		}
	}
	// Keys of another subscription: encrypted for the wrong browser, the
	// service cannot tell (a real one forwards it); the mock can.
	res, err := p.Send(t.Context(), push.Device{Platform: push.WebPush, Endpoint: good.Endpoint, P256dh: other.P256dh, Auth: other.Auth}, fullNotification())
	if res.Outcome != push.Failed || res.Status != 400 || err == nil {
		t.Errorf("wrong keys: %+v, %v", res, err)
	}
	if len(mock.Errors()) != 1 || !strings.Contains(mock.Errors()[0], "decrypt") {
		t.Errorf("mock errors %v, want one decrypt failure", mock.Errors())
	}
}

func TestWebPushPayloadTooLarge(t *testing.T) {
	p, mock := startWebPush(t, "mailto:ops@example.com")
	sub := mock.Subscribe()
	n := fullNotification()
	n.Data = map[string]string{"blob": strings.Repeat("x", 5000)}
	res, err := p.Send(t.Context(), webDevice(sub), n)
	if res.Outcome != push.Failed || !errors.Is(err, push.ErrRejected) || !strings.Contains(err.Error(), "too large") {
		t.Errorf("%+v, %v", res, err)
	}
}

func TestWebPushConfigErrors(t *testing.T) {
	pub, priv, err := pushtest.NewVAPIDKeys()
	if err != nil {
		t.Fatal(err)
	}
	pub2, _, err := pushtest.NewVAPIDKeys()
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]push.WebPushConfig{
		"no keys":          {Subject: "mailto:a@b"},
		"mismatched keys":  {VAPIDPublicKey: pub2, VAPIDPrivateKey: priv, Subject: "mailto:a@b"},
		"bad private key":  {VAPIDPublicKey: pub, VAPIDPrivateKey: "AAAA", Subject: "mailto:a@b"},
		"no subject":       {VAPIDPublicKey: pub, VAPIDPrivateKey: priv},
		"http subject":     {VAPIDPublicKey: pub, VAPIDPrivateKey: priv, Subject: "http://example.com"},
		"bare mail":        {VAPIDPublicKey: pub, VAPIDPrivateKey: priv, Subject: "ops@example.com"},
		"unknown urgency":  {VAPIDPublicKey: pub, VAPIDPrivateKey: priv, Subject: "mailto:a@b", Urgency: "now"},
		"public not point": {VAPIDPublicKey: priv, VAPIDPrivateKey: priv, Subject: "mailto:a@b"},
	}
	for name, cfg := range cases {
		if _, err := push.NewWebPush(cfg); !errors.Is(err, push.ErrConfig) {
			t.Errorf("%s: %v, want ErrConfig", name, err)
		}
	}
}

// The caller's own *http.Client is used when given (here trusting the
// mock through its transport).
func TestWebPushWithCallerHTTPClient(t *testing.T) {
	pub, priv, err := pushtest.NewVAPIDKeys()
	if err != nil {
		t.Fatal(err)
	}
	mock := pushtest.StartWebPush(t, pub)
	var buf strings.Builder
	var mu sync.Mutex
	log := slog.New(slog.NewTextHandler(&lockedWriter{w: &buf, mu: &mu}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	p, err := push.NewWebPush(push.WebPushConfig{
		VAPIDPublicKey: pub, VAPIDPrivateKey: priv, Subject: "mailto:ops@example.com", Logger: log,
		HTTPClient:            &http.Client{Transport: &http.Transport{TLSClientConfig: mock.TLSConfig()}},
		AllowPrivateEndpoints: true, // the mock listens on 127.0.0.1
	})
	if err != nil {
		t.Fatal(err)
	}
	sub := mock.Subscribe()
	if _, err := p.Send(t.Context(), webDevice(sub), fullNotification()); err != nil {
		t.Fatal(err)
	}
	mock.Fail(sub, pushtest.Unregistered)
	if _, err := p.Send(t.Context(), webDevice(sub), fullNotification()); !errors.Is(err, push.ErrDeadToken) {
		t.Fatal(err)
	}
	mu.Lock()
	out := buf.String()
	mu.Unlock()
	if !strings.Contains(out, "push send failed") || strings.Contains(out, sub.ID()) || !strings.Contains(out, "127.0.0.1") {
		t.Errorf("log line: %s", out)
	}
}
