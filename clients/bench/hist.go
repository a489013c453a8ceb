package main

import (
	"math"
	"math/bits"
	"sync/atomic"
	"time"
)

// Histogram is an HdrHistogram-style log-linear histogram of durations
// in nanoseconds: values below 128 ns have a bucket each; above, every
// power of two is split into 64 equal buckets, so a reported percentile
// is within 1/64 (1.6 %) of the true value, whatever the range (1 ns to
// the age of the universe in 3,776 counters, 30 KB). Add is lock-free
// (one atomic increment per sample plus min/max/sum), so every receiving
// goroutine records straight into one shared histogram: at 100k
// deliveries/s a slice of every sample (the Recorder) would cost the
// generator more memory and a sort at the end.
type Histogram struct {
	counts [histBuckets]atomic.Uint64
	n      atomic.Uint64
	sum    atomic.Uint64 // ns; overflows after 584 years of summed latency
	min    atomic.Uint64 // stored as ^v so that the zero value means "none"
	max    atomic.Uint64
}

const (
	histSubBits = 6                      // 64 sub-buckets per power of two
	histLinear  = 1 << (histSubBits + 1) // values below this are exact
	histBuckets = histLinear + (64-histSubBits-1)*(1<<histSubBits)
)

// histIndex is the bucket of v.
func histIndex(v uint64) int {
	if v < histLinear {
		return int(v)
	}
	shift := bits.Len64(v) - (histSubBits + 1) // >= 1
	top := v >> uint(shift)                    // in [64, 128)
	return histLinear + (shift-1)<<histSubBits + int(top-(1<<histSubBits))
}

// histUpper is the highest value that falls into bucket i.
func histUpper(i int) uint64 {
	if i < histLinear {
		return uint64(i)
	}
	j := i - histLinear
	shift := j>>histSubBits + 1
	top := uint64(j&(1<<histSubBits-1)) + 1<<histSubBits
	return (top+1)<<uint(shift) - 1
}

// Add records one duration (negative ones count as 0).
func (h *Histogram) Add(d time.Duration) {
	v := uint64(0)
	if d > 0 {
		v = uint64(d)
	}
	h.counts[histIndex(v)].Add(1)
	h.n.Add(1)
	h.sum.Add(v)
	for {
		cur := h.max.Load()
		if v <= cur || h.max.CompareAndSwap(cur, v) {
			break
		}
	}
	for {
		cur := h.min.Load() // ^min; 0 when empty
		if (cur != 0 && ^cur <= v) || h.min.CompareAndSwap(cur, ^v) {
			break
		}
	}
}

// Count is the number of recorded values.
func (h *Histogram) Count() uint64 { return h.n.Load() }

// Merge adds every value of o into h.
func (h *Histogram) Merge(o *Histogram) {
	if o.n.Load() == 0 {
		return
	}
	for i := range o.counts {
		if c := o.counts[i].Load(); c > 0 {
			h.counts[i].Add(c)
		}
	}
	h.n.Add(o.n.Load())
	h.sum.Add(o.sum.Load())
	if m := o.max.Load(); m > h.max.Load() {
		h.max.Store(m)
	}
	if m := o.min.Load(); m != 0 && (h.min.Load() == 0 || ^m < ^h.min.Load()) {
		h.min.Store(m)
	}
}

// Percentile is the nearest-rank percentile p (0..100): the upper edge
// of the bucket holding the ceil(p% × n)-th value, clamped to the
// observed min and max (so p100 is the exact maximum). Read it while no
// Add runs for an exact answer; during a run it is a close estimate.
func (h *Histogram) Percentile(p float64) time.Duration {
	n := h.n.Load()
	if n == 0 {
		return 0
	}
	lo, hi := ^h.min.Load(), h.max.Load()
	if p <= 0 {
		return time.Duration(lo)
	}
	rank := uint64(math.Ceil(p/100*float64(n) - 1e-9))
	rank = max(1, min(rank, n))
	var seen uint64
	for i := range h.counts {
		seen += h.counts[i].Load()
		if seen >= rank {
			v := histUpper(i)
			return time.Duration(max(lo, min(v, hi)))
		}
	}
	return time.Duration(hi)
}

// Summary summarizes the histogram in the same form as exact samples.
func (h *Histogram) Summary() Summary {
	n := h.n.Load()
	if n == 0 {
		return Summary{}
	}
	return Summary{
		Count: int(n),
		Min:   ms(time.Duration(^h.min.Load())),
		Mean:  ms(time.Duration(h.sum.Load() / n)),
		P50:   ms(h.Percentile(50)),
		P90:   ms(h.Percentile(90)),
		P99:   ms(h.Percentile(99)),
		P999:  ms(h.Percentile(99.9)),
		Max:   ms(time.Duration(h.max.Load())),
	}
}
