package push

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/sideshow/apns2"
)

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	cases := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"", 0, false},
		{"7", 7 * time.Second, true},
		{" 120 ", 2 * time.Minute, true},
		{"0", 0, true},
		{"-5", 0, false},
		{"99999999999", 24 * time.Hour, true},
		{"Thu, 03 Dec 2026 10:01:30 GMT", 90 * time.Second, true},
		{"Thu, 03 Dec 2026 09:00:00 GMT", 0, true},
		{"Sat, 03 Dec 2050 10:00:00 GMT", 24 * time.Hour, true},
		{"soon", 0, false},
		{"1.5", 0, false},
	}
	for _, c := range cases {
		got, ok := ParseRetryAfter(c.in, now)
		if got != c.want || ok != c.ok {
			t.Errorf("ParseRetryAfter(%q) = %v, %v; want %v, %v", c.in, got, ok, c.want, c.ok)
		}
	}
}

func FuzzParseRetryAfter(f *testing.F) {
	for _, s := range []string{"7", "Thu, 03 Dec 2026 10:01:30 GMT", "Thursday, 03-Dec-26 10:01:30 GMT", "Thu Dec  3 10:01:30 2026", "-1", "9223372036854775807", ""} {
		f.Add(s)
	}
	now := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, s string) {
		d, ok := ParseRetryAfter(s, now)
		if d < 0 || d > maxRetryAfter {
			t.Fatalf("ParseRetryAfter(%q) = %v", s, d)
		}
		if !ok && d != 0 {
			t.Fatalf("ParseRetryAfter(%q) = %v but not ok", s, d)
		}
	})
}

func TestTruncate(t *testing.T) {
	if got := truncate("short", 10); got != "short" {
		t.Errorf("truncate short = %q", got)
	}
	for _, s := range []string{strings.Repeat("a", 100), strings.Repeat("é", 100), strings.Repeat("🙂", 100)} {
		got := truncate(s, 25)
		if len(got) > 25 || !utf8.ValidString(got) || !strings.HasSuffix(got, "…") {
			t.Errorf("truncate(%q…, 25) = %q (%d bytes)", s[:8], got, len(got))
		}
	}
}

func TestCollapseKey(t *testing.T) {
	if got := collapseKey("c-7f3a", 32, isB64URL); got != "c-7f3a" {
		t.Errorf("short valid id changed: %q", got)
	}
	if got := collapseKey("", 32, isB64URL); got != "" {
		t.Errorf("empty id gave %q", got)
	}
	a := collapseKey("group:g-1", 32, isB64URL)
	b := collapseKey("group:g-2", 32, isB64URL)
	if a == b || len(a) != 32 || strings.IndexFunc(a, func(r rune) bool { return !isB64URL(r) }) >= 0 {
		t.Errorf("hashed keys %q, %q", a, b)
	}
	if collapseKey("group:g-1", 32, isB64URL) != a {
		t.Error("hash not stable")
	}
}

func TestRedactAndScrub(t *testing.T) {
	tok := "a1b2c3d4e5f6a7b8c9d0"
	if r := Redact(tok); strings.Contains(r, tok[6:]) || !strings.HasPrefix(r, "a1b2c3") {
		t.Errorf("Redact = %q", r)
	}
	if r := Redact("abc"); strings.Contains(r, "abc") {
		t.Errorf("Redact short = %q", r)
	}
	err := &url.Error{Op: "Post", URL: "https://api.push.apple.com/3/device/" + tok, Err: context.DeadlineExceeded}
	got := scrubURL(fmt.Errorf("wrapped: %w", err))
	if strings.Contains(got.Error(), tok) || !errors.Is(got, context.DeadlineExceeded) || !strings.Contains(got.Error(), "api.push.apple.com") {
		t.Errorf("scrubURL = %v", got)
	}
}

type fakeProvider struct {
	name string
	got  []Device
}

func (f *fakeProvider) Name() string { return f.name }
func (f *fakeProvider) Send(_ context.Context, d Device, _ Notification) (Result, error) {
	f.got = append(f.got, d)
	return Result{Outcome: Delivered}, nil
}

func TestRouter(t *testing.T) {
	a, w := &fakeProvider{name: "apns"}, &fakeProvider{name: "webpush"}
	r := NewRouter(map[Platform]Provider{APNs: a, WebPush: w, FCM: nil})
	if !r.Enabled(APNs) || r.Enabled(FCM) {
		t.Error("Enabled wrong")
	}
	if _, err := r.Send(t.Context(), Device{Platform: APNs}, Notification{}); err != nil || len(a.got) != 1 {
		t.Errorf("apns: %v, %d", err, len(a.got))
	}
	res, err := r.Send(t.Context(), Device{Platform: FCM}, Notification{})
	if res.Outcome != Failed || !errors.Is(err, ErrNoProvider) || !errors.Is(err, ErrRejected) {
		t.Errorf("fcm off: %+v, %v", res, err)
	}
}

func TestErrFor(t *testing.T) {
	for _, c := range []struct {
		o    Outcome
		want error
	}{{DeadToken, ErrDeadToken}, {RetryLater, ErrRetryLater}, {Failed, ErrRejected}} {
		err := errFor(Result{Outcome: c.o, Status: 410, Reason: "Unregistered"}, "apns", ErrBadResponse)
		if !errors.Is(err, c.want) || !errors.Is(err, ErrBadResponse) || !strings.Contains(err.Error(), "410 Unregistered") {
			t.Errorf("%v: %v", c.o, err)
		}
	}
	if errFor(Result{Outcome: Delivered}, "apns", nil) != nil {
		t.Error("delivered gave an error")
	}
}

func TestAPNsEndpoints(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	cfg := APNsConfig{KeyPEM: keyPEM, KeyID: "K", TeamID: "T", Topic: "com.example.chat"}
	p, err := NewAPNs(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if p.prod.Host != apns2.HostProduction || p.dev == nil || p.dev.Host != apns2.HostDevelopment {
		t.Errorf("default: prod %q, dev %v", p.prod.Host, p.dev)
	}
	cfg.Endpoint = "development"
	if p, _ = NewAPNs(cfg); p.prod.Host != apns2.HostDevelopment || p.dev != nil {
		t.Errorf("development: %q, %v", p.prod.Host, p.dev)
	}
	cfg.Endpoint = "https://127.0.0.1:8443/"
	if p, _ = NewAPNs(cfg); p.prod.Host != "https://127.0.0.1:8443" || p.dev != nil {
		t.Errorf("URL: %q, %v", p.prod.Host, p.dev)
	}
}
