package auth

import (
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// maxLimiterEntries bounds the memory of a limiter map under a flood of
// distinct usernames or addresses.
const maxLimiterEntries = 100_000

// sweepEvery is how often idle limiters are dropped.
const sweepEvery = time.Minute

// limiterMap holds one token bucket per key (username or IP). Only failed
// logins take tokens; a key with no token left is refused before any
// password is hashed.
type limiterMap struct {
	limit rate.Limit
	burst int
	max   int

	mu        sync.Mutex
	m         map[string]*rate.Limiter
	lastSweep time.Time
}

func newLimiterMap(spec RateSpec, max int) *limiterMap {
	return &limiterMap{
		limit: rate.Limit(spec.PerMinute / 60),
		burst: spec.Burst,
		max:   max,
		m:     make(map[string]*rate.Limiter),
	}
}

// check returns 0 when key may try now, else how long until it may.
func (l *limiterMap) check(key string, now time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	lim, ok := l.m[key]
	if !ok {
		return 0
	}
	tokens := lim.TokensAt(now)
	if tokens >= 1 {
		return 0
	}
	secs := (1 - tokens) / float64(l.limit)
	return time.Duration(math.Ceil(secs * float64(time.Second)))
}

// fail takes a token from key's bucket.
func (l *limiterMap) fail(key string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	lim, ok := l.m[key]
	if !ok {
		l.sweepLocked(now)
		lim = rate.NewLimiter(l.limit, l.burst)
		l.m[key] = lim
	}
	lim.AllowN(now, 1)
}

// sweepLocked drops buckets that have refilled (they carry no state a new
// bucket would not), and if the map is still full, arbitrary ones: memory
// is bounded at the price of forgetting some failures under a flood.
func (l *limiterMap) sweepLocked(now time.Time) {
	if len(l.m) < l.max && now.Sub(l.lastSweep) < sweepEvery {
		return
	}
	l.lastSweep = now
	for k, lim := range l.m {
		if lim.TokensAt(now) >= float64(l.burst) {
			delete(l.m, k)
		}
	}
	for k := range l.m {
		if len(l.m) < l.max {
			break
		}
		delete(l.m, k)
	}
}

func (l *limiterMap) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.m)
}
