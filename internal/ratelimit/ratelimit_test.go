package ratelimit

import (
	"errors"
	"fmt"
	"github.com/edgechat/edgechat/internal/testutil"
	"math"
	"net/netip"
	"sync"
	"testing"
	"time"
)

func newClock() *testutil.FakeClock {
	return testutil.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
}

func mustNew(t *testing.T, cfg Config) *Limiter {
	t.Helper()
	l, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestBurstThenRefusedWithRetryAfterThenRecovered(t *testing.T) {
	c := newClock()
	l := mustNew(t, Config{Spec: Spec{Rate: 2, Burst: 3}, Now: c.Now})
	for i := range 3 {
		if ok, ra := l.Allow("a"); !ok || ra != 0 {
			t.Fatalf("event %d of the burst refused (%v)", i, ra)
		}
	}
	ok, ra := l.Allow("a")
	if ok || ra != 500*time.Millisecond {
		t.Fatalf("over the burst: ok=%v retryAfter=%v, want refused after 500ms", ok, ra)
	}
	// Refusals take no token: hammering does not push the refill out.
	for range 10 {
		if ok, ra2 := l.Allow("a"); ok || ra2 != ra {
			t.Fatalf("repeat refusal: ok=%v retryAfter=%v", ok, ra2)
		}
	}
	// Other keys have their own buckets.
	if ok, _ := l.Allow("b"); !ok {
		t.Fatal("another key refused")
	}
	c.Advance(499 * time.Millisecond)
	if ok, ra := l.Allow("a"); ok || ra != time.Millisecond {
		t.Fatalf("1ms early: ok=%v retryAfter=%v", ok, ra)
	}
	c.Advance(time.Millisecond)
	if ok, _ := l.Allow("a"); !ok {
		t.Fatal("not recovered after Retry-After")
	}
	if ok, _ := l.Allow("a"); ok {
		t.Fatal("a second token appeared from nowhere")
	}
	// After a long pause the bucket is full again, and no fuller.
	c.Advance(time.Hour)
	for i := range 3 {
		if ok, _ := l.Allow("a"); !ok {
			t.Fatalf("refilled burst event %d refused", i)
		}
	}
	if ok, _ := l.Allow("a"); ok {
		t.Fatal("burst exceeded after a pause")
	}
}

func TestSustainedRate(t *testing.T) {
	c := newClock()
	l := mustNew(t, Config{Spec: Spec{Rate: 10, Burst: 1}, Now: c.Now})
	allowed := 0
	for range 1000 { // 10 s in 10 ms steps
		if ok, _ := l.Allow("k"); ok {
			allowed++
		}
		c.Advance(10 * time.Millisecond)
	}
	if allowed < 99 || allowed > 101 {
		t.Fatalf("%d events in 10s at 10/s", allowed)
	}
}

func TestUnlimited(t *testing.T) {
	l := mustNew(t, Config{Spec: Unlimited})
	for range 1000 {
		if ok, _ := l.Allow("x"); !ok {
			t.Fatal("unlimited refused")
		}
	}
	if l.Len() != 0 {
		t.Fatalf("unlimited keeps %d buckets", l.Len())
	}
}

func TestBoundedUnderScan(t *testing.T) {
	c := newClock()
	l := mustNew(t, Config{Spec: Spec{Rate: 1, Burst: 2}, MaxKeys: 100, IdleTTL: time.Hour, Now: c.Now})
	// A hot key in use throughout must keep its (empty) bucket: LRU evicts
	// the one-shot scanners, not it.
	l.Allow("hot")
	l.Allow("hot")
	for i := range 10000 {
		l.Allow(fmt.Sprintf("10.0.%d.%d", i/256, i%256))
		if i%50 == 0 {
			if ok, _ := l.Allow("hot"); ok {
				t.Fatalf("hot key got a fresh bucket at scan step %d", i)
			}
		}
		if n := l.Len(); n > 100 {
			t.Fatalf("%d buckets, bound is 100", n)
		}
	}
	if l.Evicted() < 9000 {
		t.Fatalf("evicted %d", l.Evicted())
	}
}

func TestIdleBucketsDropped(t *testing.T) {
	c := newClock()
	// Refill time 5s; a shorter IdleTTL is raised to it.
	l := mustNew(t, Config{Spec: Spec{Rate: 2, Burst: 10}, IdleTTL: time.Second, Now: c.Now})
	for i := range 50 {
		l.Allow(fmt.Sprint(i))
	}
	if l.Len() != 50 {
		t.Fatalf("Len %d", l.Len())
	}
	c.Advance(4 * time.Second)
	l.Allow("fresh")
	if l.Len() != 51 {
		t.Fatalf("buckets dropped before their refill time: Len %d", l.Len())
	}
	c.Advance(time.Second)
	l.Allow("fresh")
	if l.Len() != 1 {
		t.Fatalf("idle buckets kept: Len %d", l.Len())
	}
	if l.Evicted() != 0 {
		t.Fatalf("idle drops counted as evictions: %d", l.Evicted())
	}
	// A dropped key comes back with a full bucket, as it would have had.
	for i := range 10 {
		if ok, _ := l.Allow("3"); !ok {
			t.Fatalf("event %d after idle drop refused", i)
		}
	}
}

func TestClockGoingBackwards(t *testing.T) {
	c := newClock()
	l := mustNew(t, Config{Spec: Spec{Rate: 1, Burst: 1}, Now: c.Now})
	l.Allow("k")
	c.Advance(-time.Minute)
	if ok, ra := l.Allow("k"); ok || ra <= 0 {
		t.Fatalf("a clock step back granted a token: %v %v", ok, ra)
	}
}

func TestConfigValidation(t *testing.T) {
	for _, cfg := range []Config{
		{},
		{Spec: Spec{Rate: 0, Burst: 5}},
		{Spec: Spec{Rate: 5, Burst: 0}},
		{Spec: Spec{Rate: math.Inf(1), Burst: 1}},
		{Spec: Spec{Rate: math.NaN(), Burst: 1}},
		{Spec: Spec{Rate: 1, Burst: 1}, MaxKeys: -1},
		{Spec: Spec{Rate: 1, Burst: 1}, IdleTTL: -time.Second},
	} {
		if _, err := New(cfg); !errors.Is(err, ErrConfig) {
			t.Errorf("New(%+v) = %v, want ErrConfig", cfg, err)
		}
	}
	if s := (Spec{Rate: 5, Burst: 10}).String(); s != "5/s burst 10" {
		t.Fatalf("String %q", s)
	}
}

func TestConcurrentUse(t *testing.T) {
	l := mustNew(t, Config{Spec: Spec{Rate: 1, Burst: 100}, MaxKeys: 2000})
	var wg sync.WaitGroup
	var mu sync.Mutex
	allowed := 0
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				key := "shared"
				if i%2 == 1 {
					key = fmt.Sprint(g, i)
				}
				if ok, _ := l.Allow(key); ok && key == "shared" {
					mu.Lock()
					allowed++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	// 800 attempts on "shared" in well under a second: the burst plus at
	// most a token or two of refill.
	if allowed < 100 || allowed > 105 {
		t.Fatalf("shared key allowed %d times", allowed)
	}
	if l.Len() != 801 {
		t.Fatalf("Len %d, want 801", l.Len())
	}
}

func BenchmarkAllow(b *testing.B) {
	l, _ := New(Config{Spec: Spec{Rate: 1e9, Burst: 1 << 30}})
	keys := make([]string, 1024)
	for i := range keys {
		keys[i] = fmt.Sprint("user", i)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			l.Allow(keys[i&1023])
			i++
		}
	})
}

func TestWaitPeeksWithoutTaking(t *testing.T) {
	c := newClock()
	l := mustNew(t, Config{Spec: Spec{Rate: 0.1, Burst: 2}, Now: c.Now}) // a token per 10 s
	if d := l.Wait("u"); d != 0 || l.Len() != 0 {
		t.Fatalf("unknown key: wait %v, %d buckets (a peek must not create one)", d, l.Len())
	}
	// Failures take tokens; peeks do not.
	for range 2 {
		if d := l.Wait("u"); d != 0 {
			t.Fatalf("wait %v with tokens left", d)
		}
		l.Allow("u")
	}
	if d := l.Wait("u"); d != 10*time.Second {
		t.Fatalf("empty bucket: wait %v, want 10s", d)
	}
	c.Advance(9 * time.Second)
	if d := l.Wait("u"); d != time.Second {
		t.Fatalf("after 9s: wait %v, want 1s", d)
	}
	if d := l.Wait("other"); d != 0 {
		t.Fatalf("other key waits %v", d)
	}
	c.Advance(time.Second)
	if d := l.Wait("u"); d != 0 {
		t.Fatalf("refilled: wait %v", d)
	}
	if d := mustNew(t, Config{Spec: Unlimited}).Wait("u"); d != 0 {
		t.Fatalf("unlimited waits %v", d)
	}
}

func TestIPKey(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.1:5000":             "192.0.2.1",
		"192.0.2.1":                  "192.0.2.1",
		"[::ffff:192.0.2.1]:80":      "192.0.2.1",
		"[2001:db8:a:b:1::1]:80":     "2001:db8:a:b::/64",
		"2001:db8:a:b:ffff::9":       "2001:db8:a:b::/64",
		"[fe80::1%eth0]:1":           "fe80::/64",
		"pipe":                       "pipe",
		"[2001:db8:a:c::1]:80":       "2001:db8:a:c::/64",
		"not an address:with a port": "not an address",
		"":                           "",
	} {
		if got := RemoteIPKey(in); got != want {
			t.Errorf("RemoteIPKey(%q) = %q, want %q", in, got, want)
		}
	}
	// The gateway's parsed addresses get the same keys.
	for in, want := range map[netip.Addr]string{
		netip.MustParseAddr("192.0.2.1"):         "192.0.2.1",
		netip.MustParseAddr("::ffff:192.0.2.1"):  "192.0.2.1",
		netip.MustParseAddr("2001:db8:a:b:1::1"): "2001:db8:a:b::/64",
		netip.MustParseAddr("fe80::1%eth0"):      "fe80::/64",
		{}:                                       "unknown",
	} {
		if got := IPKey(in); got != want {
			t.Errorf("IPKey(%v) = %q, want %q", in, got, want)
		}
	}
}
