// Package ratelimit is the one rate limiter of edgechat: a keyed
// token-bucket limiter, one golang.org/x/time/rate bucket per key (a
// client IP, a user ID, ...) in a bounded map. The gateway uses it per IP
// and per user and route class, the broker for MQTT publishes per user
// and connection attempts per IP, and auth for failed logins per username
// and per IP (Wait before the attempt, Allow to count a failure). IPKey is
// the one key of a client address.
//
// Memory stays bounded under a scan of many keys: buckets idle for longer
// than it takes them to refill are dropped (a full bucket is the same as
// no bucket, so nothing is lost), and when the map is still full the least
// recently used bucket is evicted (that key starts over with a full
// bucket: under that pressure the limiter fails open for the oldest key
// rather than growing without bound).
package ratelimit

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// DefaultMaxKeys bounds the buckets a Limiter keeps (about 200 bytes each).
const DefaultMaxKeys = 10000

// ErrConfig reports an invalid Spec or Config.
var ErrConfig = errors.New("ratelimit: invalid config")

// Spec is a token bucket: Rate tokens per second refill a bucket of Burst
// tokens; each event takes one. A negative Rate means unlimited.
type Spec struct {
	Rate  float64 `json:"rate" yaml:"rate"`
	Burst int     `json:"burst" yaml:"burst"`
}

// Unlimited is a Spec that allows everything.
var Unlimited = Spec{Rate: -1}

// IsUnlimited reports whether s allows everything.
func (s Spec) IsUnlimited() bool { return s.Rate < 0 }

// IsZero reports whether s is the zero Spec (callers use it for "default").
func (s Spec) IsZero() bool { return s == Spec{} }

// Validate checks a limited Spec: a positive finite rate and a burst of at
// least one.
func (s Spec) Validate() error {
	if s.IsUnlimited() {
		return nil
	}
	if !(s.Rate > 0) || math.IsInf(s.Rate, 0) || s.Burst < 1 {
		return fmt.Errorf("%w: rate %v burst %d (want rate > 0 and burst >= 1, or a negative rate for unlimited)",
			ErrConfig, s.Rate, s.Burst)
	}
	return nil
}

// String is "5/s burst 10" or "unlimited".
func (s Spec) String() string {
	if s.IsUnlimited() {
		return "unlimited"
	}
	return fmt.Sprintf("%g/s burst %d", s.Rate, s.Burst)
}

// Config configures a Limiter.
type Config struct {
	Spec
	// MaxKeys bounds the number of buckets; default DefaultMaxKeys.
	MaxKeys int
	// IdleTTL drops buckets unused for this long; default (and minimum)
	// the time an empty bucket takes to refill, rounded up to a second.
	IdleTTL time.Duration
	// Now is the clock; nil means time.Now. Tests inject a fake one.
	Now func() time.Time
}

// Limiter is a set of token buckets, one per key. It is safe for
// concurrent use.
type Limiter struct {
	spec    Spec
	max     int
	ttl     time.Duration
	now     func() time.Time
	mu      sync.Mutex
	buckets map[string]*bucket
	// LRU list: head is the most recently used bucket, tail the least.
	head, tail *bucket
	evicted    uint64
}

type bucket struct {
	key        string
	lim        *rate.Limiter
	last       time.Time
	prev, next *bucket
}

// New builds a Limiter.
func New(cfg Config) (*Limiter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.MaxKeys < 0 || cfg.IdleTTL < 0 {
		return nil, fmt.Errorf("%w: negative MaxKeys or IdleTTL", ErrConfig)
	}
	l := &Limiter{spec: cfg.Spec, max: cfg.MaxKeys, ttl: cfg.IdleTTL, now: cfg.Now}
	if l.max == 0 {
		l.max = DefaultMaxKeys
	}
	if l.now == nil {
		l.now = time.Now
	}
	if !l.spec.IsUnlimited() {
		// Dropping a bucket earlier than its refill time would hand the key
		// fresh tokens: the TTL is never shorter than that.
		refill := time.Duration(math.Ceil(float64(l.spec.Burst)/l.spec.Rate)) * time.Second
		if l.ttl < refill {
			l.ttl = refill
		}
		l.buckets = make(map[string]*bucket)
	}
	return l, nil
}

// Spec is the limiter's token bucket.
func (l *Limiter) Spec() Spec { return l.spec }

// Allow takes a token from key's bucket. When the bucket is empty it
// takes nothing and says how long until a token is there (the delay of a
// reservation that is then cancelled), for Retry-After.
func (l *Limiter) Allow(key string) (ok bool, retryAfter time.Duration) {
	if l.spec.IsUnlimited() {
		return true, 0
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.dropIdle(now)
	b := l.buckets[key]
	if b == nil {
		if len(l.buckets) >= l.max {
			l.remove(l.tail)
			l.evicted++
		}
		b = &bucket{key: key, lim: rate.NewLimiter(rate.Limit(l.spec.Rate), l.spec.Burst)}
		l.buckets[key] = b
	} else {
		l.unlink(b)
	}
	l.pushFront(b)
	b.last = now

	r := b.lim.ReserveN(now, 1)
	if !r.OK() { // cannot happen with Burst >= 1; be safe
		return false, time.Duration(math.MaxInt64)
	}
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now) // a refused event must not push the refill further out
		return false, d
	}
	return true, 0
}

// Wait says how long until key's bucket holds a token, taking nothing and
// creating no bucket (a key with no bucket has a full one). Limits that
// count failures only (auth's login throttling) ask Wait before an attempt
// and take a token with Allow when the attempt fails.
func (l *Limiter) Wait(key string) time.Duration {
	if l.spec.IsUnlimited() {
		return 0
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.dropIdle(now)
	b := l.buckets[key]
	if b == nil {
		return 0
	}
	tokens := b.lim.TokensAt(now)
	if tokens >= 1 {
		return 0
	}
	secs := (1 - tokens) / l.spec.Rate
	return time.Duration(math.Ceil(secs * float64(time.Second)))
}

// Len is the number of buckets held.
func (l *Limiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}

// Evicted counts buckets dropped early because the map was full.
func (l *Limiter) Evicted() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.evicted
}

// dropIdle removes buckets unused for the TTL, oldest first; the list is
// in use order, so this stops at the first fresh one (amortized O(1)).
func (l *Limiter) dropIdle(now time.Time) {
	for b := l.tail; b != nil && now.Sub(b.last) >= l.ttl; b = l.tail {
		l.remove(b)
	}
}

func (l *Limiter) remove(b *bucket) {
	l.unlink(b)
	delete(l.buckets, b.key)
}

func (l *Limiter) unlink(b *bucket) {
	if b.prev != nil {
		b.prev.next = b.next
	} else {
		l.head = b.next
	}
	if b.next != nil {
		b.next.prev = b.prev
	} else {
		l.tail = b.prev
	}
	b.prev, b.next = nil, nil
}

func (l *Limiter) pushFront(b *bucket) {
	b.next = l.head
	if l.head != nil {
		l.head.prev = b
	}
	l.head = b
	if l.tail == nil {
		l.tail = b
	}
}

// IPKey is the rate-limit key of a client address: an IPv4 address (also
// IPv4-mapped IPv6) as itself, an IPv6 address as its /64, which one
// subscriber usually holds whole; zones are dropped. An invalid address
// is "unknown". Every per-IP limit of edgechat (HTTP, MQTT connects,
// failed logins) keys by it.
func IPKey(a netip.Addr) string {
	if !a.IsValid() {
		return "unknown"
	}
	a = a.Unmap().WithZone("")
	if a.Is6() {
		return netip.PrefixFrom(a, 64).Masked().String()
	}
	return a.String()
}

// RemoteIPKey is IPKey of a remote address given as "host:port" or a bare
// host (net.Conn.RemoteAddr().String(), http.Request.RemoteAddr). A host
// that is not an IP address is its own key.
func RemoteIPKey(remote string) string {
	host := remote
	if h, _, err := net.SplitHostPort(remote); err == nil {
		host = h
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	return IPKey(a)
}
