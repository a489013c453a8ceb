package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ErrBadSweep is returned for a --sweep that is neither a list of rates
// nor START/FACTOR/MAX.
var ErrBadSweep = errors.New("bad --sweep")

// ParseSweep reads the rates of a sweep: "1000,2000,5000" (ascending
// after sorting, duplicates dropped) or "START/FACTOR/MAX", a geometric
// series START, START×FACTOR, … up to MAX (included when the series
// lands on it within rounding).
func ParseSweep(s string) ([]float64, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, fmt.Errorf("%w: empty", ErrBadSweep)
	}
	if parts := strings.Split(s, "/"); len(parts) > 1 {
		if len(parts) != 3 {
			return nil, fmt.Errorf("%w: %q: want START/FACTOR/MAX", ErrBadSweep, s)
		}
		var v [3]float64
		for i, p := range parts {
			f, err := strconv.ParseFloat(strings.TrimSpace(p), 64)
			if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
				return nil, fmt.Errorf("%w: %q: %q is not a number", ErrBadSweep, s, p)
			}
			v[i] = f
		}
		start, factor, top := v[0], v[1], v[2]
		if start <= 0 || factor <= 1 || top < start {
			return nil, fmt.Errorf("%w: %q: want START > 0, FACTOR > 1, MAX >= START", ErrBadSweep, s)
		}
		var out []float64
		for r := start; r <= top*(1+1e-9); r *= factor {
			out = append(out, math.Round(r))
			if len(out) > 100 {
				return nil, fmt.Errorf("%w: %q: more than 100 steps", ErrBadSweep, s)
			}
		}
		return slices.Compact(out), nil
	}
	var out []float64
	for _, p := range strings.Split(s, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		mult := 1.0
		if strings.HasSuffix(p, "k") {
			p, mult = strings.TrimSuffix(p, "k"), 1000
		}
		f, err := strconv.ParseFloat(p, 64)
		if err != nil || !(f > 0) || math.IsInf(f, 0) {
			return nil, fmt.Errorf("%w: %q: rate %q must be a positive number", ErrBadSweep, s, p)
		}
		out = append(out, f*mult)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: %q: no rate", ErrBadSweep, s)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// SweepResult is the outcome of a rate sweep.
type SweepResult struct {
	P99MaxMs float64 `json:"p99MaxMs"`
	// Best is the highest offered rate whose step passed (no loss, no
	// failed publish, p99 within the bar) before the sweep stopped; 0
	// when none did.
	Best float64 `json:"bestRate"`
	// Peak is the highest delivered rate of a step that lost nothing and
	// had no failed publish, whatever its latency: capacity, where Best
	// is capacity at a latency.
	Peak  float64 `json:"peakDeliveredPerSecond"`
	Steps []Step  `json:"steps"`
	// Stopped says why the sweep ended before its last rate.
	Stopped string `json:"stopped,omitempty"`
}

// Sweep runs step at each rate in ascending order and stops once
// stopAfter steps in a row have failed the bar (a higher rate would only
// be worse, and an overloaded broker needs time to recover before the
// next); stopAfter < 1 means 1. More than one absorbs a single noisy
// step on a shared machine. Step errors end the sweep.
func Sweep(ctx context.Context, rates []float64, p99Max time.Duration, stopAfter int, step func(context.Context, float64) (Step, error)) (SweepResult, error) {
	res := SweepResult{P99MaxMs: ms(p99Max)}
	stopAfter = max(stopAfter, 1)
	failedInARow := 0
	for i, r := range rates {
		st, err := step(ctx, r)
		if err != nil {
			return res, fmt.Errorf("sweep step at %.0f/s: %w", r, err)
		}
		res.Steps = append(res.Steps, st)
		if st.Lost == 0 && st.Failed == 0 {
			res.Peak = max(res.Peak, st.Rate)
		}
		if st.OK(p99Max) {
			res.Best = r
			failedInARow = 0
			continue
		}
		failedInARow++
		if failedInARow >= stopAfter && i < len(rates)-1 {
			res.Stopped = fmt.Sprintf("at %.0f/s: p99 %.2f ms, %d lost, %d failed, %d duplicated", r, st.BarP99(), st.Lost, st.Failed, st.Duplicates)
			if st.Unsent > 0 {
				res.Stopped += fmt.Sprintf(", %d never sent", st.Unsent)
			}
			break
		}
	}
	return res, nil
}
