package push_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgechat/edgechat/bridge/push"
	"github.com/edgechat/edgechat/bridge/push/pushtest"
)

// startFCM starts the mock and a provider whose service-account file
// points at the mock's token endpoint.
func startFCM(t *testing.T, opts pushtest.FCMOptions, tweak func(*push.FCMConfig)) (*push.FCMProvider, *pushtest.FCM) {
	t.Helper()
	mock := pushtest.StartFCM(t, opts)
	file := filepath.Join(t.TempDir(), "service-account.json")
	if err := os.WriteFile(file, mock.ServiceAccountJSON(), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := push.FCMConfig{CredentialsFile: file, Endpoint: mock.URL, TLSConfig: mock.TLSConfig()}
	if tweak != nil {
		tweak(&cfg)
	}
	p, err := push.NewFCM(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p, mock
}

func fcmDevice(token string) push.Device {
	return push.Device{Platform: push.FCM, Token: token}
}

func TestFCMDelivers(t *testing.T) {
	p, mock := startFCM(t, pushtest.FCMOptions{ProjectID: "edgechat-test"}, nil)
	n := fullNotification()
	n.Data = map[string]string{"kind": "dm", "google.x": "reserved", "from": "reserved"}
	for i := range 2 {
		res, err := p.Send(t.Context(), fcmDevice("reg-token-1"), n)
		if err != nil || res.Outcome != push.Delivered || !strings.HasPrefix(res.ID, "projects/edgechat-test/messages/") {
			t.Fatalf("send %d: %+v, %v", i, res, err)
		}
	}
	if errs := mock.Errors(); len(errs) > 0 {
		t.Fatalf("mock refused: %v", errs)
	}
	if got := mock.TokensIssued(); got != 1 {
		t.Errorf("%d access tokens fetched for 2 sends, want 1 (cached)", got)
	}
	reqs := mock.Requests()
	if len(reqs) != 2 {
		t.Fatalf("mock got %d requests", len(reqs))
	}
	r := reqs[0]
	m := r.Message
	if r.Project != "edgechat-test" || r.AccessToken == "" || m.Token != "reg-token-1" {
		t.Errorf("project %q, bearer %q, token %q", r.Project, r.AccessToken, m.Token)
	}
	if m.Notification.Title != "Alice" || m.Notification.Body != "hello bob" {
		t.Errorf("notification %+v", m.Notification)
	}
	if m.Android.CollapseKey != "c-7f3a" || m.Android.Priority != "HIGH" || m.Android.Notification.Tag != "c-7f3a" ||
		m.Android.Notification.NotificationCount == nil || *m.Android.Notification.NotificationCount != 3 {
		t.Errorf("android %+v", m.Android)
	}
	if ttl, err := time.ParseDuration(m.Android.TTL); err != nil || ttl <= 59*time.Minute || ttl > time.Hour {
		t.Errorf("android ttl %q, want about an hour (the expiry)", m.Android.TTL)
	}
	want := map[string]string{"messageId": "7211938138472448001", "conversationId": "c-7f3a", "kind": "dm"}
	if len(m.Data) != len(want) {
		t.Errorf("data %v, want %v (reserved keys dropped)", m.Data, want)
	}
	for k, v := range want {
		if m.Data[k] != v {
			t.Errorf("data[%s] = %q, want %q", k, m.Data[k], v)
		}
	}
	if m.APNs.Headers["apns-collapse-id"] != "c-7f3a" {
		t.Errorf("apns headers %v", m.APNs.Headers)
	}
}

// An access token close to its expiry is replaced before it expires: the
// send that finds it old still uses it and starts the fetch of the next.
func TestFCMRefreshesTokenBeforeExpiry(t *testing.T) {
	p, mock := startFCM(t, pushtest.FCMOptions{TokenLifetime: 4 * time.Minute}, nil)
	for range 2 {
		if _, err := p.Send(t.Context(), fcmDevice("t"), fullNotification()); err != nil {
			t.Fatal(err)
		}
	}
	// The new token arrives in the background; a later send uses it.
	first := mock.Requests()[0].AccessToken
	if second := mock.Requests()[1].AccessToken; second != first {
		t.Errorf("the second send waited for a new token; want the old one (still valid)")
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, err := p.Send(t.Context(), fcmDevice("t"), fullNotification()); err != nil {
			t.Fatal(err)
		}
		reqs := mock.Requests()
		if reqs[len(reqs)-1].AccessToken != first {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still the first token after %d sends", len(reqs))
		}
	}
	if n := mock.TokensIssued(); n < 2 || n > 3 {
		t.Errorf("%d tokens fetched", n)
	}
}

// A token FCM refuses (401) is dropped: the send is retried and the next
// one fetches a new token.
func TestFCMRevokedTokenIsReplaced(t *testing.T) {
	p, mock := startFCM(t, pushtest.FCMOptions{}, nil)
	if _, err := p.Send(t.Context(), fcmDevice("t"), fullNotification()); err != nil {
		t.Fatal(err)
	}
	mock.RevokeTokens()
	res, err := p.Send(t.Context(), fcmDevice("t"), fullNotification())
	if res.Outcome != push.RetryLater || res.Status != 401 || !errors.Is(err, push.ErrRetryLater) {
		t.Fatalf("with a revoked token: %+v, %v", res, err)
	}
	if _, err := p.Send(t.Context(), fcmDevice("t"), fullNotification()); err != nil {
		t.Fatalf("after: %v", err)
	}
	if got := mock.TokensIssued(); got != 2 {
		t.Errorf("%d tokens, want 2", got)
	}
}

func TestFCMFaults(t *testing.T) {
	p, mock := startFCM(t, pushtest.FCMOptions{}, nil)
	mock.SetRetryAfter("12")
	cases := []struct {
		fault      pushtest.Fault
		outcome    push.Outcome
		sentinel   error
		status     int
		reason     string
		retryAfter time.Duration
	}{
		{pushtest.Unregistered, push.DeadToken, push.ErrDeadToken, 404, "UNREGISTERED", 0},
		{pushtest.BadToken, push.DeadToken, push.ErrDeadToken, 400, "INVALID_ARGUMENT", 0},
		{pushtest.BadRequest, push.Failed, push.ErrRejected, 400, "INVALID_ARGUMENT", 0},
		{pushtest.TooManyRequests, push.RetryLater, push.ErrRetryLater, 429, "QUOTA_EXCEEDED", 12 * time.Second},
		{pushtest.ServerError, push.RetryLater, push.ErrRetryLater, 500, "INTERNAL", 0},
		{pushtest.Garbage, push.RetryLater, push.ErrBadResponse, 200, "", 0},
	}
	for _, c := range cases {
		tok := "reg-" + strings.Repeat("x", int(c.fault))
		mock.Fail(tok, c.fault)
		res, err := p.Send(t.Context(), fcmDevice(tok), fullNotification())
		if res.Outcome != c.outcome || res.Status != c.status || res.Reason != c.reason || res.RetryAfter != c.retryAfter {
			t.Errorf("fault %d: %+v, want %v %d %q retry-after %v", c.fault, res, c.outcome, c.status, c.reason, c.retryAfter)
		}
		if !errors.Is(err, c.sentinel) {
			t.Errorf("fault %d: error %v, want %v", c.fault, err, c.sentinel)
		}
	}
}

func TestFCMHangTimesOutWithoutBlockingOthers(t *testing.T) {
	p, mock := startFCM(t, pushtest.FCMOptions{}, nil)
	mock.Fail("stuck", pushtest.Hang)
	// Fetch the access token first so that both sends only post.
	if _, err := p.Send(t.Context(), fcmDevice("warm"), fullNotification()); err != nil {
		t.Fatal(err)
	}
	const hang = time.Second
	var wg sync.WaitGroup
	var err error
	wg.Add(1)
	go func() {
		defer wg.Done()
		ctx, cancel := context.WithTimeout(t.Context(), hang)
		defer cancel()
		_, err = p.Send(ctx, fcmDevice("stuck"), fullNotification())
	}()
	start := time.Now()
	for range 20 {
		if _, err := p.Send(t.Context(), fcmDevice("other"), fullNotification()); err != nil {
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

func TestFCMTokenEndpointFailures(t *testing.T) {
	p, mock := startFCM(t, pushtest.FCMOptions{}, func(c *push.FCMConfig) { c.TokenTimeout = time.Second })

	mock.FailTokens(pushtest.BadRequest)
	res, err := p.Send(t.Context(), fcmDevice("t"), fullNotification())
	if res.Outcome != push.Failed || res.Status != 400 || !errors.Is(err, push.ErrRejected) {
		t.Errorf("token endpoint refusing: %+v, %v; want Failed", res, err)
	}

	mock.FailTokens(pushtest.ServerError)
	res, err = p.Send(t.Context(), fcmDevice("t"), fullNotification())
	if res.Outcome != push.RetryLater || !errors.Is(err, push.ErrRetryLater) {
		t.Errorf("token endpoint failing: %+v, %v; want RetryLater", res, err)
	}

	// A hanging token endpoint: the send gives up at its deadline.
	mock.FailTokens(pushtest.Hang)
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	res, err = p.Send(ctx, fcmDevice("t"), fullNotification())
	if res.Outcome != push.RetryLater || !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 2*time.Second {
		t.Errorf("token endpoint hanging: %+v, %v after %v", res, err, time.Since(start))
	}

	mock.FailTokens(pushtest.OK)
	// The hanging fetch ends at the token timeout; a send after works.
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := p.Send(t.Context(), fcmDevice("t"), fullNotification())
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no recovery after the token endpoint came back: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n := len(mock.Requests()); n != 1 {
		t.Errorf("%d messages reached the send endpoint, want 1 (none without a token)", n)
	}
}

func TestFCMConfigErrors(t *testing.T) {
	mock := pushtest.StartFCM(t, pushtest.FCMOptions{})
	good := string(mock.ServiceAccountJSON())
	cases := map[string]push.FCMConfig{
		"nothing":        {},
		"missing file":   {CredentialsFile: filepath.Join(t.TempDir(), "none.json")},
		"not json":       {CredentialsJSON: []byte("{")},
		"wrong type":     {CredentialsJSON: []byte(strings.Replace(good, `"service_account"`, `"authorized_user"`, 1))},
		"bad key":        {CredentialsJSON: []byte(strings.Replace(good, "MII", "XXX", 1))},
		"http endpoint":  {CredentialsJSON: []byte(good), Endpoint: "http://127.0.0.1:1"},
		"http token uri": {CredentialsJSON: []byte(strings.Replace(good, `"token_uri":"https`, `"token_uri":"http`, 1))},
	}
	for name, cfg := range cases {
		if _, err := push.NewFCM(cfg); !errors.Is(err, push.ErrConfig) {
			t.Errorf("%s: %v, want ErrConfig", name, err)
		}
	}
}

func TestClassifyFCM(t *testing.T) {
	cases := []struct {
		status  int
		body    string
		outcome push.Outcome
		reason  string
	}{
		{200, `{"name":"projects/p/messages/1"}`, push.Delivered, ""},
		{200, `{}`, push.RetryLater, ""},
		{404, `{"error":{"code":404,"status":"NOT_FOUND","details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"UNREGISTERED"}]}}`, push.DeadToken, "UNREGISTERED"},
		{400, `{"error":{"code":400,"message":"The registration token is not a valid FCM registration token","status":"INVALID_ARGUMENT"}}`, push.DeadToken, "INVALID_ARGUMENT"},
		{400, `{"error":{"code":400,"message":"Invalid value at 'message.data'","status":"INVALID_ARGUMENT"}}`, push.Failed, "INVALID_ARGUMENT"},
		{403, `{"error":{"code":403,"status":"PERMISSION_DENIED","details":[{"errorCode":"SENDER_ID_MISMATCH"}]}}`, push.Failed, "SENDER_ID_MISMATCH"},
		{401, `{"error":{"code":401,"status":"UNAUTHENTICATED","details":[{"errorCode":"THIRD_PARTY_AUTH_ERROR"}]}}`, push.Failed, "THIRD_PARTY_AUTH_ERROR"},
		{401, `{"error":{"code":401,"status":"UNAUTHENTICATED"}}`, push.RetryLater, "UNAUTHENTICATED"},
		{503, `{"error":{"code":503,"status":"UNAVAILABLE","details":[{"errorCode":"UNAVAILABLE"}]}}`, push.RetryLater, "UNAVAILABLE"},
		{502, `<html>Bad Gateway</html>`, push.RetryLater, ""},
		{404, `<html>Not Found</html>`, push.Failed, ""},
		{418, `{"error":{"code":418,"status":"TEAPOT"}}`, push.Failed, "TEAPOT"},
	}
	for _, c := range cases {
		res, _ := push.ClassifyFCM(c.status, []byte(c.body))
		if res.Outcome != c.outcome || res.Reason != c.reason || res.Status != c.status {
			t.Errorf("%d %s: %+v, want %v %q", c.status, c.body, res, c.outcome, c.reason)
		}
	}
}

func FuzzClassifyFCM(f *testing.F) {
	f.Add(200, []byte(`{"name":"projects/p/messages/1"}`))
	f.Add(404, []byte(`{"error":{"code":404,"status":"NOT_FOUND","details":[{"errorCode":"UNREGISTERED"}]}}`))
	f.Add(400, []byte(`{"error":{"message":"x","status":"INVALID_ARGUMENT","details":[{"fieldViolations":[{"field":"message.token"}]}]}}`))
	f.Add(429, []byte(`{"error":{"details":[null,{},{"errorCode":7}]}}`))
	f.Add(500, []byte("<html>"))
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		res, cause := push.ClassifyFCM(status, body)
		if res.Outcome < push.Delivered || res.Outcome > push.Failed {
			t.Fatalf("outcome %d", res.Outcome)
		}
		if res.Outcome == push.Delivered && (status < 200 || status > 299 || res.ID == "" || cause != nil) {
			t.Fatalf("delivered with status %d, id %q, cause %v", status, res.ID, cause)
		}
		if status >= 200 && status <= 299 && res.Outcome != push.Delivered && !errors.Is(cause, push.ErrBadResponse) {
			t.Fatalf("2xx not delivered without ErrBadResponse: %+v", res)
		}
		if res.Status != status {
			t.Fatalf("status %d, want %d", res.Status, status)
		}
	})
}

// Sends that start together share one access-token request.
func TestFCMConcurrentSendsShareOneToken(t *testing.T) {
	p, mock := startFCM(t, pushtest.FCMOptions{}, nil)
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for i := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := p.Send(t.Context(), fcmDevice("tok-"+strings.Repeat("a", i)), fullNotification()); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := mock.TokensIssued(); n != 1 {
		t.Errorf("%d token requests for 32 concurrent sends, want 1", n)
	}
	if n := len(mock.Requests()); n != 32 {
		t.Errorf("%d messages, want 32", n)
	}
}
