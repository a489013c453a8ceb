package main

import (
	"maps"
	"math"
	"slices"
	"sync"
	"time"
)

// Summary describes a latency distribution. Durations are reported in
// milliseconds in JSON so that the file is readable without unit
// conversion.
type Summary struct {
	Count int     `json:"count"`
	Min   float64 `json:"minMs"`
	Mean  float64 `json:"meanMs"`
	P50   float64 `json:"p50Ms"`
	P90   float64 `json:"p90Ms"`
	P99   float64 `json:"p99Ms"`
	P999  float64 `json:"p999Ms"`
	Max   float64 `json:"maxMs"`
}

// Percentile returns the nearest-rank percentile p (0 < p <= 100) of
// sorted: the smallest value such that at least p% of the values are at
// or below it. Nearest rank (rather than interpolation) always returns a
// latency that was really observed, as HdrHistogram does. It returns 0
// for an empty slice; p <= 0 gives the minimum.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	if p <= 0 {
		return sorted[0]
	}
	if p >= 100 {
		return sorted[n-1]
	}
	// The 1e-9 keeps p*n that is an integer in exact arithmetic (e.g.
	// 99*100/100) from rounding up one rank through float error.
	rank := int(math.Ceil(p/100*float64(n) - 1e-9))
	if rank < 1 {
		rank = 1
	}
	return sorted[rank-1]
}

// Summarize sorts ds in place and returns its summary.
func Summarize(ds []time.Duration) Summary {
	if len(ds) == 0 {
		return Summary{}
	}
	slices.Sort(ds)
	var sum time.Duration
	for _, d := range ds {
		sum += d
	}
	return Summary{
		Count: len(ds),
		Min:   ms(ds[0]),
		Mean:  ms(sum / time.Duration(len(ds))),
		P50:   ms(Percentile(ds, 50)),
		P90:   ms(Percentile(ds, 90)),
		P99:   ms(Percentile(ds, 99)),
		P999:  ms(Percentile(ds, 99.9)),
		Max:   ms(ds[len(ds)-1]),
	}
}

// ms converts to fractional milliseconds, rounded to microseconds.
func ms(d time.Duration) float64 {
	return math.Round(float64(d)/1e3) / 1e3
}

// distributionPercentiles are the points of the latency charts, spaced
// evenly on the chart's "nines" axis.
var distributionPercentiles = []float64{0, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 99.95, 99.99, 100}

// Recorder collects durations from many goroutines. It keeps every
// sample (a 30 s run at 1,000 msg/s is 30,000 of them, 240 KB): exact
// percentiles are worth more here than a bounded histogram.
type Recorder struct {
	mu sync.Mutex
	ds []time.Duration
}

// Add records one duration.
func (r *Recorder) Add(d time.Duration) {
	r.mu.Lock()
	r.ds = append(r.ds, d)
	r.mu.Unlock()
}

// Len is the number of recorded durations.
func (r *Recorder) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.ds)
}

// Sorted returns a sorted copy of the recorded durations.
func (r *Recorder) Sorted() []time.Duration {
	r.mu.Lock()
	ds := slices.Clone(r.ds)
	r.mu.Unlock()
	slices.Sort(ds)
	return ds
}

// errTally counts failures by their message (its first 100 characters);
// safe for concurrent use.
type errTally struct {
	mu sync.Mutex
	m  map[string]int
}

func (t *errTally) add(err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		t.m = map[string]int{}
	}
	t.m[truncate(err.Error(), 100)]++
}

// counts is a copy of the tally, nil when nothing failed.
func (t *errTally) counts() map[string]int {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.m) == 0 {
		return nil
	}
	return maps.Clone(t.m)
}
