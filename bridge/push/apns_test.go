package push_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgechat/edgechat/bridge/push"
	"github.com/edgechat/edgechat/bridge/push/pushtest"
)

const (
	testKeyID  = "ABC123DEFG"
	testTeamID = "TEAM123456"
	testTopic  = "com.example.chat"
)

// startAPNs starts the mock and a token-auth provider (the .p8 key in a
// file, as operators give it) pointed at it.
func startAPNs(t *testing.T) (*push.APNsProvider, *pushtest.APNs) {
	t.Helper()
	pemKey, key, err := pushtest.NewAPNsKey()
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "AuthKey_"+testKeyID+".p8")
	if err := os.WriteFile(keyFile, pemKey, 0o600); err != nil {
		t.Fatal(err)
	}
	mock := pushtest.StartAPNs(t, pushtest.APNsOptions{Key: &key.PublicKey, KeyID: testKeyID, TeamID: testTeamID})
	p, err := push.NewAPNs(push.APNsConfig{
		KeyFile: keyFile, KeyID: testKeyID, TeamID: testTeamID, Topic: testTopic,
		Endpoint: mock.URL, TLSConfig: mock.TLSConfig(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p, mock
}

func apnsDevice(token string) push.Device {
	return push.Device{Platform: push.APNs, Token: token}
}

func fullNotification() push.Notification {
	badge := 3
	return push.Notification{
		Title: "Alice", Body: "hello bob", Badge: &badge, Sound: "default",
		CollapseID: "c-7f3a", ThreadID: "c-7f3a",
		MessageID: "7211938138472448001", ConversationID: "c-7f3a",
		Data:           map[string]string{"from": "alice"},
		Expiry:         time.Now().Add(time.Hour).Truncate(time.Second),
		MutableContent: true,
	}
}

func TestAPNsDelivers(t *testing.T) {
	p, mock := startAPNs(t)
	tok := pushtest.NewDeviceToken()
	n := fullNotification()
	for i := range 3 {
		res, err := p.Send(t.Context(), apnsDevice(tok), n)
		if err != nil || res.Outcome != push.Delivered || res.Status != 200 || res.ID == "" {
			t.Fatalf("send %d: %+v, %v", i, res, err)
		}
	}
	reqs := mock.Requests()
	if len(reqs) != 3 {
		t.Fatalf("mock got %d requests, want 3", len(reqs))
	}
	r := reqs[0]
	check := func(what, got, want string) {
		t.Helper()
		if got != want {
			t.Errorf("%s = %q, want %q", what, got, want)
		}
	}
	check("proto", r.Proto, "HTTP/2.0")
	check("token", r.Token, tok)
	check("apns-topic", r.Topic, testTopic)
	check("apns-push-type", r.PushType, "alert")
	check("apns-collapse-id", r.CollapseID, "c-7f3a")
	check("apns-priority", r.Priority, "10")
	check("apns-expiration", r.Expiration, strconv.FormatInt(n.Expiry.Unix(), 10))
	check("jwt kid", r.KeyID, testKeyID)
	check("jwt iss", r.TeamID, testTeamID)
	alert, _ := r.APS["alert"].(map[string]any)
	check("alert.title", alert["title"].(string), "Alice")
	check("alert.body", alert["body"].(string), "hello bob")
	check("thread-id", r.APS["thread-id"].(string), "c-7f3a")
	check("sound", r.APS["sound"].(string), "default")
	if r.APS["badge"] != float64(3) || r.APS["mutable-content"] != float64(1) {
		t.Errorf("aps = %v, want badge 3 and mutable-content 1", r.APS)
	}
	if r.Custom["messageId"] != "7211938138472448001" || r.Custom["conversationId"] != "c-7f3a" || r.Custom["from"] != "alice" {
		t.Errorf("custom data = %v", r.Custom)
	}
	// One HTTP/2 connection, kept and reused.
	if c := mock.Connections(); c != 1 {
		t.Errorf("%d connections for 3 sends, want 1", c)
	}
}

func TestAPNsDeviceTopicAndLongCollapseID(t *testing.T) {
	p, mock := startAPNs(t)
	tok := pushtest.NewDeviceToken()
	d := apnsDevice(tok)
	d.Topic = "com.example.other"
	n := push.Notification{Title: "t", Body: strings.Repeat("é", 2000), CollapseID: strings.Repeat("g", 100)}
	if _, err := p.Send(t.Context(), d, n); err != nil {
		t.Fatal(err)
	}
	r := mock.Requests()[0]
	if r.Topic != "com.example.other" {
		t.Errorf("topic %q, want the device's", r.Topic)
	}
	if len(r.CollapseID) == 0 || len(r.CollapseID) > 64 {
		t.Errorf("collapse id %q: want a hash of at most 64 bytes", r.CollapseID)
	}
	body := r.APS["alert"].(map[string]any)["body"].(string)
	if len(body) > push.MaxBodyBytes || !strings.HasSuffix(body, "…") {
		t.Errorf("body of %d bytes not cut with an ellipsis", len(body))
	}
	if r.Expiration == "" {
		t.Error("no apns-expiration for a notification without expiry")
	}
}

func TestAPNsFaults(t *testing.T) {
	p, mock := startAPNs(t)
	cases := []struct {
		fault      pushtest.Fault
		outcome    push.Outcome
		sentinel   error
		status     int
		reason     string
		retryAfter time.Duration
	}{
		{pushtest.Unregistered, push.DeadToken, push.ErrDeadToken, 410, "Unregistered", 0},
		{pushtest.BadToken, push.DeadToken, push.ErrDeadToken, 400, "BadDeviceToken", 0},
		{pushtest.BadRequest, push.Failed, push.ErrRejected, 400, "BadTopic", 0},
		{pushtest.TooManyRequests, push.RetryLater, push.ErrRetryLater, 429, "TooManyRequests", 7 * time.Second},
		{pushtest.ServerError, push.RetryLater, push.ErrRetryLater, 500, "InternalServerError", 0},
		{pushtest.Garbage, push.RetryLater, push.ErrBadResponse, 200, "", 0},
	}
	for _, c := range cases {
		tok := pushtest.NewDeviceToken()
		mock.Fail(tok, c.fault)
		res, err := p.Send(t.Context(), apnsDevice(tok), fullNotification())
		if res.Outcome != c.outcome || res.Status != c.status || res.Reason != c.reason || res.RetryAfter != c.retryAfter {
			t.Errorf("fault %d: %+v, want %v %d %q retry-after %v", c.fault, res, c.outcome, c.status, c.reason, c.retryAfter)
		}
		if !errors.Is(err, c.sentinel) {
			t.Errorf("fault %d: error %v, want %v", c.fault, err, c.sentinel)
		}
		if err != nil && strings.Contains(err.Error(), tok) {
			t.Errorf("fault %d: the error holds the token: %v", c.fault, err)
		}
	}
	if c := mock.Connections(); c != 1 {
		t.Errorf("%d connections, want 1 (failures do not drop the connection)", c)
	}
}

// A hanging request ends with its context; sends to other devices on the
// same connection are not held up meanwhile.
func TestAPNsHangTimesOutWithoutBlockingOthers(t *testing.T) {
	p, mock := startAPNs(t)
	stuck := pushtest.NewDeviceToken()
	mock.Fail(stuck, pushtest.Hang)

	// The hanging send's deadline: the sends beside it must all be done
	// before it ends (no wall-clock bound of their own: the machine may
	// be busy).
	const hang = 3 * time.Second
	var wg sync.WaitGroup
	var res push.Result
	var err error
	hung := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(hung)
		ctx, cancel := context.WithTimeout(t.Context(), hang)
		defer cancel()
		res, err = p.Send(ctx, apnsDevice(stuck), fullNotification())
	}()
	// Wait until the hanging request is at the mock.
	for deadline := time.Now().Add(hang); len(mock.Requests()) == 0 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	for range 20 {
		if _, err := p.Send(t.Context(), apnsDevice(pushtest.NewDeviceToken()), fullNotification()); err != nil {
			t.Fatalf("send beside the hanging one: %v", err)
		}
	}
	select {
	case <-hung:
		t.Errorf("20 sends beside a hanging one ended only after it (its deadline %v)", hang)
	default:
	}
	wg.Wait()
	if res.Outcome != push.RetryLater || !errors.Is(err, push.ErrRetryLater) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("hanging send: %+v, %v; want RetryLater with the deadline", res, err)
	}
	if strings.Contains(err.Error(), stuck) {
		t.Errorf("the error holds the token: %v", err)
	}
}

func TestAPNsRequestTimeout(t *testing.T) {
	pemKey, key, err := pushtest.NewAPNsKey()
	if err != nil {
		t.Fatal(err)
	}
	mock := pushtest.StartAPNs(t, pushtest.APNsOptions{Key: &key.PublicKey, KeyID: testKeyID, TeamID: testTeamID})
	p, err := push.NewAPNs(push.APNsConfig{
		KeyPEM: pemKey, KeyID: testKeyID, TeamID: testTeamID, Topic: testTopic,
		Endpoint: mock.URL, TLSConfig: mock.TLSConfig(), RequestTimeout: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	tok := pushtest.NewDeviceToken()
	mock.Fail(tok, pushtest.Hang)
	start := time.Now()
	// No deadline from the caller: the provider's own timeout ends it.
	_, err = p.Send(context.Background(), apnsDevice(tok), fullNotification())
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 5*time.Second {
		t.Errorf("after %v: %v; want the request timeout", time.Since(start), err)
	}
}

func TestAPNsCertificateAuth(t *testing.T) {
	certPEM, err := pushtest.NewClientCert("Apple Push Services: com.example.chat")
	if err != nil {
		t.Fatal(err)
	}
	certFile := filepath.Join(t.TempDir(), "apns.pem")
	if err := os.WriteFile(certFile, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	mock := pushtest.StartAPNs(t, pushtest.APNsOptions{ClientCerts: true})
	p, err := push.NewAPNs(push.APNsConfig{
		CertFile: certFile, Topic: testTopic, Endpoint: mock.URL, TLSConfig: mock.TLSConfig(),
	})
	if err != nil {
		t.Fatal(err)
	}
	tok := pushtest.NewDeviceToken()
	if res, err := p.Send(t.Context(), apnsDevice(tok), fullNotification()); err != nil {
		t.Fatalf("%+v, %v", res, err)
	}
	if r := mock.Requests()[0]; r.ClientCN != "Apple Push Services: com.example.chat" || r.KeyID != "" {
		t.Errorf("mock saw client %q, jwt kid %q; want the certificate and no JWT", r.ClientCN, r.KeyID)
	}
}

// A .p12 as Apple hands it out (testdata/README.md says how it was
// made): the client presents its certificate, and a wrong password is a
// configuration error at start, not a failure at the first push.
func TestAPNsP12CertificateAuth(t *testing.T) {
	mock := pushtest.StartAPNs(t, pushtest.APNsOptions{ClientCerts: true})
	if _, err := push.NewAPNs(push.APNsConfig{CertFile: "testdata/apns-cert.p12", CertPassword: "wrong",
		Topic: testTopic, Endpoint: mock.URL, TLSConfig: mock.TLSConfig()}); !errors.Is(err, push.ErrConfig) {
		t.Fatalf("wrong password: %v, want ErrConfig", err)
	}
	p, err := push.NewAPNs(push.APNsConfig{CertFile: "testdata/apns-cert.p12", CertPassword: "test-password",
		Topic: testTopic, Endpoint: mock.URL, TLSConfig: mock.TLSConfig()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	if res, err := p.Send(t.Context(), apnsDevice(pushtest.NewDeviceToken()), fullNotification()); err != nil {
		t.Fatalf("%+v, %v", res, err)
	}
	if r := mock.Requests()[0]; r.ClientCN != "Apple Push Services: com.example.chat" || r.KeyID != "" {
		t.Errorf("mock saw client %q, jwt kid %q; want the certificate and no JWT", r.ClientCN, r.KeyID)
	}
}

func TestAPNsWrongKeyIsRefused(t *testing.T) {
	_, other, err := pushtest.NewAPNsKey()
	if err != nil {
		t.Fatal(err)
	}
	pemKey, _, err := pushtest.NewAPNsKey()
	if err != nil {
		t.Fatal(err)
	}
	mock := pushtest.StartAPNs(t, pushtest.APNsOptions{Key: &other.PublicKey, KeyID: testKeyID, TeamID: testTeamID})
	p, err := push.NewAPNs(push.APNsConfig{KeyPEM: pemKey, KeyID: testKeyID, TeamID: testTeamID,
		Topic: testTopic, Endpoint: mock.URL, TLSConfig: mock.TLSConfig()})
	if err != nil {
		t.Fatal(err)
	}
	res, err := p.Send(t.Context(), apnsDevice(pushtest.NewDeviceToken()), fullNotification())
	if res.Outcome != push.Failed || res.Reason != "InvalidProviderToken" || !errors.Is(err, push.ErrRejected) {
		t.Errorf("%+v, %v; want 403 InvalidProviderToken, Failed", res, err)
	}
}

func TestAPNsUntrustedServer(t *testing.T) {
	pemKey, key, err := pushtest.NewAPNsKey()
	if err != nil {
		t.Fatal(err)
	}
	mock := pushtest.StartAPNs(t, pushtest.APNsOptions{Key: &key.PublicKey, KeyID: testKeyID, TeamID: testTeamID})
	// No TLSConfig: the system roots do not trust the mock.
	p, err := push.NewAPNs(push.APNsConfig{KeyPEM: pemKey, KeyID: testKeyID, TeamID: testTeamID,
		Topic: testTopic, Endpoint: mock.URL})
	if err != nil {
		t.Fatal(err)
	}
	res, err := p.Send(t.Context(), apnsDevice(pushtest.NewDeviceToken()), fullNotification())
	if res.Outcome != push.RetryLater || err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("%+v, %v; want a certificate error", res, err)
	}
}

func TestAPNsRefusesBeforeSending(t *testing.T) {
	p, mock := startAPNs(t)
	past := fullNotification()
	past.Expiry = time.Now().Add(-time.Minute)
	cases := []struct {
		name string
		d    push.Device
		n    push.Notification
		want error
	}{
		{"not hex", apnsDevice("zz" + pushtest.NewDeviceToken()), fullNotification(), push.ErrInvalidDevice},
		{"empty", apnsDevice(""), fullNotification(), push.ErrInvalidDevice},
		{"other platform", push.Device{Platform: push.FCM, Token: "x"}, fullNotification(), push.ErrInvalidDevice},
		{"expired", apnsDevice(pushtest.NewDeviceToken()), past, push.ErrExpired},
	}
	for _, c := range cases {
		res, err := p.Send(t.Context(), c.d, c.n)
		if res.Outcome != push.Failed || !errors.Is(err, push.ErrRejected) || !errors.Is(err, c.want) {
			t.Errorf("%s: %+v, %v; want Failed, %v", c.name, res, err, c.want)
		}
	}
	if n := len(mock.Requests()); n != 0 {
		t.Errorf("%d requests reached the mock", n)
	}
}

func TestAPNsConfigErrors(t *testing.T) {
	pemKey, _, err := pushtest.NewAPNsKey()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cases := map[string]push.APNsConfig{
		"nothing":          {},
		"key without ids":  {KeyPEM: pemKey},
		"key and cert":     {KeyPEM: pemKey, KeyID: testKeyID, TeamID: testTeamID, CertFile: "x.p12"},
		"not a key":        {KeyPEM: []byte("hello"), KeyID: testKeyID, TeamID: testTeamID},
		"missing key file": {KeyFile: filepath.Join(dir, "none.p8"), KeyID: testKeyID, TeamID: testTeamID},
		"missing p12":      {CertFile: filepath.Join(dir, "none.p12")},
		"http endpoint":    {KeyPEM: pemKey, KeyID: testKeyID, TeamID: testTeamID, Endpoint: "http://127.0.0.1:1"},
		"unknown endpoint": {KeyPEM: pemKey, KeyID: testKeyID, TeamID: testTeamID, Endpoint: "staging"},
	}
	for name, cfg := range cases {
		if _, err := push.NewAPNs(cfg); !errors.Is(err, push.ErrConfig) {
			t.Errorf("%s: %v, want ErrConfig", name, err)
		}
	}
	for _, ep := range []string{"", "production", "development"} {
		if _, err := push.NewAPNs(push.APNsConfig{KeyPEM: pemKey, KeyID: testKeyID, TeamID: testTeamID, Endpoint: ep}); err != nil {
			t.Errorf("endpoint %q: %v", ep, err)
		}
	}
}

// The failure log line has the outcome and a shortened token, never the
// token or the message text.
func TestFailureLogRedacts(t *testing.T) {
	pemKey, key, err := pushtest.NewAPNsKey()
	if err != nil {
		t.Fatal(err)
	}
	mock := pushtest.StartAPNs(t, pushtest.APNsOptions{Key: &key.PublicKey, KeyID: testKeyID, TeamID: testTeamID})
	var buf bytes.Buffer
	var mu sync.Mutex
	log := slog.New(slog.NewJSONHandler(&lockedWriter{w: &buf, mu: &mu}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	p, err := push.NewAPNs(push.APNsConfig{KeyPEM: pemKey, KeyID: testKeyID, TeamID: testTeamID, Topic: testTopic,
		Endpoint: mock.URL, TLSConfig: mock.TLSConfig(), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	tok := pushtest.NewDeviceToken()
	mock.Fail(tok, pushtest.Unregistered)
	n := fullNotification()
	n.Body = "the secret plan"
	if _, err := p.Send(t.Context(), apnsDevice(tok), n); !errors.Is(err, push.ErrDeadToken) {
		t.Fatal(err)
	}
	mu.Lock()
	out := buf.String()
	mu.Unlock()
	if !strings.Contains(out, `"msg":"push send failed"`) || !strings.Contains(out, `"outcome":"dead_token"`) ||
		!strings.Contains(out, tok[:6]) {
		t.Errorf("log lacks the failure: %s", out)
	}
	if strings.Contains(out, tok) || strings.Contains(out, "secret plan") {
		t.Errorf("log holds the token or the text: %s", out)
	}
}

type lockedWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

// A provider JWT APNs calls expired (a clock that jumped, a machine that
// slept) is retried, and the retry carries a new JWT.
func TestAPNsExpiredProviderTokenIsRenewed(t *testing.T) {
	p, mock := startAPNs(t)
	tok := pushtest.NewDeviceToken()
	if _, err := p.Send(t.Context(), apnsDevice(tok), fullNotification()); err != nil {
		t.Fatal(err)
	}
	// JWT iat has a resolution of a second.
	cutoff := time.Now().Truncate(time.Second).Add(time.Second)
	mock.ExpireTokensIssuedBefore(cutoff)
	time.Sleep(time.Until(cutoff) + 10*time.Millisecond)
	res, err := p.Send(t.Context(), apnsDevice(tok), fullNotification())
	if res.Outcome != push.RetryLater || res.Reason != "ExpiredProviderToken" || !errors.Is(err, push.ErrRetryLater) {
		t.Fatalf("with an expired JWT: %+v, %v; want RetryLater", res, err)
	}
	if res, err := p.Send(t.Context(), apnsDevice(tok), fullNotification()); err != nil {
		t.Fatalf("the retry: %+v, %v", res, err)
	}
}

func TestAPNsUnregisteredTimestamp(t *testing.T) {
	p, mock := startAPNs(t)
	tok := pushtest.NewDeviceToken()
	mock.Fail(tok, pushtest.Unregistered)
	res, _ := p.Send(t.Context(), apnsDevice(tok), fullNotification())
	if res.Outcome != push.DeadToken || time.Since(res.InvalidSince) > time.Minute {
		t.Errorf("%+v: want the 410's timestamp in InvalidSince", res)
	}
}

func BenchmarkAPNsSend(b *testing.B) {
	pemKey, key, err := pushtest.NewAPNsKey()
	if err != nil {
		b.Fatal(err)
	}
	mock := pushtest.StartAPNs(b, pushtest.APNsOptions{Key: &key.PublicKey, KeyID: testKeyID, TeamID: testTeamID})
	p, err := push.NewAPNs(push.APNsConfig{KeyPEM: pemKey, KeyID: testKeyID, TeamID: testTeamID, Topic: testTopic,
		Endpoint: mock.URL, TLSConfig: mock.TLSConfig()})
	if err != nil {
		b.Fatal(err)
	}
	d := apnsDevice(pushtest.NewDeviceToken())
	n := fullNotification()
	b.SetParallelism(16)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := p.Send(context.Background(), d, n); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
